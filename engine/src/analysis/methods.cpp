#include "mambascope/analysis.h"
#include "mambascope/error.h"

namespace mambascope {

const char* method_name(Method m) {
    switch (m) {
        case Method::Vanilla:
            return "vanilla";
        case Method::LongMamba:
            return "longmamba";
        case Method::DeciMamba:
            return "decimamba";
    }
    return "?";
}

Method parse_method(const std::string& s) {
    if (s == "vanilla") return Method::Vanilla;
    if (s == "longmamba") return Method::LongMamba;
    if (s == "decimamba") return Method::DeciMamba;
    throw Error("unknown method '" + s + "'", "methods are vanilla, longmamba and decimamba");
}

const char* attention_norm_name(AttentionNorm n) {
    switch (n) {
        case AttentionNorm::None:
            return "none";
        case AttentionNorm::AbsMax:
            return "absmax";
        case AttentionNorm::AbsMinMax:
            return "absminmax";
        case AttentionNorm::Log10Floor:
            return "log10";
    }
    return "?";
}

}  // namespace mambascope
