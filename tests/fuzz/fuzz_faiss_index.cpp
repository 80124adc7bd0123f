// Fuzzes the index file reader (`load_faiss_index`): the header, the metadata JSON, the
// document ids and the trailer. The FAISS section is read by FAISS only after its size and
// FNV-1a checksum match the trailer, so mutations there end as "damaged" refusals; what a
// file that passes yields is searched once. Built when FAISS is found.
#include "fuzz_util.hpp"
#include "ssm/retrieval/faiss_index.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = ssm::fuzz::input_file("index.ssmfaiss", data, size);
    ssm::fuzz::refused_or_read([&] {
        ssm::LoadedFaissIndex loaded = ssm::load_faiss_index(path);
        if (loaded.index.size() > 0 && loaded.index.dim() <= 4096) {
            const ssm::Matrix query = ssm::Matrix::Ones(1, loaded.index.dim());
            const ssm::TopK top = loaded.index.search(query, 2);
            for (const auto id : top.ids.reshaped())
                if (id >= 0) (void)loaded.labels.doc_ids.at(static_cast<std::size_t>(id));
        }
    });
    return 0;
}
