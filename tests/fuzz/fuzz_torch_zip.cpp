// Fuzz target: the zip reader (engine/src/io/zip.cpp: central directory, stored/deflate entries, CRC) and the
// torch checkpoint loader on top of it (load_torch_zip: data.pkl through the unpickler, storages, views).
#include "fuzz_common.h"
#include "io/mapped_file.h"
#include "io/zip.h"
#include "mambascope/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto path = fuzz::write_temp("pytorch_model.bin", data, size);
    try {
        mambascope::io::ZipArchive zip(mambascope::io::MappedFile::open(path));
        size_t acc = 0;
        for (const auto& e : zip.entries()) {
            try {
                const mambascope::io::ZipBlob b = zip.read(e, /*verify_crc=*/true);
                for (size_t i = 0; i < b.size; ++i) acc += b.data[i];
            } catch (const mambascope::Error&) {
            }
        }
        fuzz_keep(acc);
    } catch (const mambascope::Error&) {
    }
    try {
        const mambascope::WeightMap w = mambascope::load_torch_zip(path);
        float acc = 0.0f;
        for (const auto& [name, t] : w) acc += fuzz::touch(t);
        fuzz_keep(acc);
    } catch (const mambascope::Error&) {
    }
    return 0;
}
