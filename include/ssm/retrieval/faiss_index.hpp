// ssm/retrieval/faiss_index.hpp — approximate (and exact) search through FAISS: a
// `VectorIndex` over a `faiss::Index` with inner-product metric (cosine on L2-normalised
// embeddings, as `ExactIndex`), and an index file that keeps the document ids beside the
// FAISS index.
//
// Only code that links FAISS includes this header (CMake: `SSM_WITH_FAISS`); the rest of
// the library never needs it.
//
// Index strings: "flat" (exact), "hnsw" or "hnsw:M" (HNSW graph, M links per node,
// default 32), "ivf:NLIST" (inverted lists over NLIST k-means cells, vectors stored in
// full), "ivf:NLIST,pq:M" (the same with vectors compressed by a product quantizer of M
// bytes), or any FAISS factory string ("OPQ16_64,IVF4096,PQ16", "HNSW32,SQ8", ...).
//
// File layout (all integers little-endian):
//   "SSMFAISS"  u32 version = 1  u32 0  u64 meta_bytes
//   meta: a JSON object {"dim", "count", "description", "metric", "corpus", "shard"}
//   ids: count × (u32 length, bytes): the document id of each vector, in id order
//   the FAISS index as faiss::write_index writes it
//   trailer: u64 faiss_bytes  u64 FNV-1a-64 of the FAISS bytes  "SSMFAISS"
// The file is written to a temporary name and renamed; reading checks every size against
// the bytes behind it and the checksum before FAISS sees a byte.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <faiss/IVFlib.h>
#include <faiss/Index.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexRefine.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <nlohmann/json.hpp>

#include "ssm/core/atomic_file.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/retrieval/top_k.hpp"
#include "ssm/retrieval/vector_index.hpp"

namespace ssm {

static_assert(std::endian::native == std::endian::little,
              "ssm/retrieval/faiss_index.hpp reads and writes little-endian data in place");

namespace detail {

/// The message of a FAISS exception without its "Error in <function> at <file>:<line>: "
/// prefix, on one line.
[[nodiscard]] inline std::string faiss_message(const std::exception& e) {
    std::string m = e.what();
    const std::size_t at = m.rfind("Error in ", 0) == 0 ? m.find(" at ") : std::string::npos;
    for (std::size_t colon = at == std::string::npos ? at : m.find(':', at); colon != std::string::npos;
         colon = m.find(':', colon + 1)) {
        std::size_t p = colon + 1;
        while (p < m.size() && m[p] >= '0' && m[p] <= '9') ++p;
        if (p > colon + 1 && m.compare(p, 2, ": ") == 0) {
            m = m.substr(p + 2);
            break;
        }
    }
    std::replace(m.begin(), m.end(), '\n', ' ');
    while (!m.empty() && m.back() == ' ') m.pop_back();
    return m;
}

/// Runs `f`, turning a FAISS exception into an `ssm::Error` that starts with `context`.
template <class F>
decltype(auto) faiss_call(std::string_view context, F&& f) {
    try {
        return f();
    } catch (const faiss::FaissException& e) {
        fail(context, ": ", faiss_message(e));
    }
}

/// A positive decimal integer, or -1.
[[nodiscard]] inline long long positive_integer(std::string_view s) {
    if (s.empty() || s.size() > 9) return -1;
    long long v = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') return -1;
        v = v * 10 + (c - '0');
    }
    return v > 0 ? v : -1;
}

inline constexpr std::string_view faiss_file_magic = "SSMFAISS";

/// FNV-1a, 64 bits, continued from `h`.
[[nodiscard]] inline std::uint64_t fnv1a(std::uint64_t h, const void* data, std::size_t n) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}
inline constexpr std::uint64_t fnv1a_start = 0xcbf29ce484222325ULL;

/// faiss::IOWriter onto a std::ostream, counting and hashing what passes.
struct OstreamIOWriter final : faiss::IOWriter {
    explicit OstreamIOWriter(std::ostream& out) : out_(out) { name = "ostream"; }
    size_t operator()(const void* ptr, size_t size, size_t nitems) override {
        const std::size_t n = size * nitems;
        out_.write(static_cast<const char*>(ptr), static_cast<std::streamsize>(n));
        if (!out_) return 0;
        bytes += n;
        hash = fnv1a(hash, ptr, n);
        return nitems;
    }
    std::uint64_t bytes = 0, hash = fnv1a_start;

private:
    std::ostream& out_;
};

/// faiss::IOReader over `limit` bytes of a std::istream: never reads past them.
struct IstreamIOReader final : faiss::IOReader {
    IstreamIOReader(std::istream& in, std::uint64_t limit) : in_(in), left_(limit) { name = "istream"; }
    size_t operator()(void* ptr, size_t size, size_t nitems) override {
        if (size == 0) return 0;
        const std::uint64_t whole = std::min<std::uint64_t>(nitems, left_ / size);
        in_.read(static_cast<char*>(ptr), static_cast<std::streamsize>(whole * size));
        const auto got = static_cast<std::uint64_t>(in_.gcount()) / size;
        left_ -= got * size;
        return static_cast<size_t>(got);
    }

private:
    std::istream& in_;
    std::uint64_t left_;
};

template <class T>
void write_le(std::ostream& out, T v) {
    out.write(reinterpret_cast<const char*>(&v), sizeof v);
}

template <class T>
[[nodiscard]] T read_le(std::istream& in, const std::string& file, const char* what) {
    T v{};
    in.read(reinterpret_cast<char*>(&v), sizeof v);
    if (in.gcount() != static_cast<std::streamsize>(sizeof v)) fail(file, ": truncated ", what);
    return v;
}

}  // namespace detail

/// The FAISS factory string for an index string ("flat", "hnsw[:M]", "ivf:NLIST[,pq:M]";
/// anything else is taken as a factory string and passed on unchanged).
[[nodiscard]] inline std::string faiss_factory_string(std::string_view spec) {
    if (spec == "flat") return "Flat";
    if (spec == "hnsw") return "HNSW32";
    if (spec.rfind("hnsw:", 0) == 0) {
        const long long m = detail::positive_integer(spec.substr(5));
        require(m >= 2 && m <= 256, "index '", spec, "': hnsw:M needs M in [2, 256]");
        return "HNSW" + std::to_string(m);
    }
    if (spec.rfind("ivf:", 0) == 0) {
        const std::string_view rest = spec.substr(4);
        const auto comma = rest.find(',');
        const long long nlist = detail::positive_integer(rest.substr(0, comma));
        require(nlist >= 1, "index '", spec, "': ivf:NLIST needs a positive number of lists");
        if (comma == std::string_view::npos) return "IVF" + std::to_string(nlist) + ",Flat";
        const std::string_view pq = rest.substr(comma + 1);
        const long long m = pq.rfind("pq:", 0) == 0 ? detail::positive_integer(pq.substr(3)) : -1;
        require(m >= 1, "index '", spec, "': expected ivf:NLIST or ivf:NLIST,pq:M");
        // "np": no polysemous training, which takes minutes and serves a search mode not used here
        return "IVF" + std::to_string(nlist) + ",PQ" + std::to_string(m) + "np";
    }
    return std::string(spec);
}

/// A `VectorIndex` over a FAISS index with the inner-product metric. Ids are the order in
/// which vectors were added (0, 1, ...). Indexes that need training (IVF, PQ) are trained
/// by `train`, or on the first `add` when not trained yet.
class FaissIndex {
public:
    /// A new, empty index of dimension `dim` from an index string (see the file comment).
    /// A string FAISS cannot build, or a shape it refuses (a PQ whose M does not divide
    /// `dim`), is an `ssm::Error` naming the string.
    FaissIndex(index dim, std::string_view spec) {
        require(dim >= 1 && dim <= std::numeric_limits<int>::max(), "FaissIndex: dimension must be >= 1, got ",
                dim);
        const std::string factory = faiss_factory_string(spec);
        const std::string context = "index '" + std::string(spec) + "'" +
                                    (factory != spec ? " (FAISS \"" + factory + "\")" : std::string());
        index_.reset(detail::faiss_call(context, [&] {
            return faiss::index_factory(static_cast<int>(dim), factory.c_str(), faiss::METRIC_INNER_PRODUCT);
        }));
        require(index_ != nullptr, context, ": FAISS returned no index");
        description_ = factory;
    }

    /// Takes ownership of a FAISS index (e.g. one read with faiss::read_index). It must use
    /// the inner-product metric.
    FaissIndex(std::unique_ptr<faiss::Index> owned, std::string description)
        : index_(std::move(owned)), description_(std::move(description)) {
        require(index_ != nullptr, "FaissIndex: no index");
        require(index_->metric_type == faiss::METRIC_INNER_PRODUCT, "FaissIndex: ", description_,
                " does not use the inner-product metric");
    }

    [[nodiscard]] index dim() const noexcept { return index_->d; }
    [[nodiscard]] index size() const noexcept { return static_cast<index>(index_->ntotal); }
    [[nodiscard]] bool is_trained() const noexcept { return index_->is_trained; }
    /// The FAISS factory string the index was made from.
    [[nodiscard]] const std::string& description() const noexcept { return description_; }
    [[nodiscard]] const faiss::Index& faiss_index() const noexcept { return *index_; }

    /// Trains the index (IVF centroids, PQ codebooks) on `sample` (n, dim); nothing for an
    /// index that needs no training.
    void train(const Matrix& sample) {
        check_dim(sample, "train");
        if (index_->is_trained) return;
        detail::faiss_call("training " + description_ + " on " + std::to_string(sample.rows()) + " vectors",
                           [&] { index_->train(static_cast<std::int64_t>(sample.rows()), sample.data()); });
    }

    /// Adds `vectors` (n, dim), which get ids size() .. size() + n - 1; trains on them first
    /// if the index is not trained yet.
    void add(const Matrix& vectors) {
        check_dim(vectors, "add");
        if (vectors.rows() == 0) return;
        if (!index_->is_trained) train(vectors);
        detail::faiss_call("adding to " + description_,
                           [&] { index_->add(static_cast<std::int64_t>(vectors.rows()), vectors.data()); });
    }

    /// For each query (nq, dim), min(k, size()) ids and inner products, best first; where
    /// the index finds fewer (too few cells probed, say), id -1 and score -inf.
    [[nodiscard]] TopK search(const Matrix& queries, index k) const {
        check_dim(queries, "search");
        require(k >= 0, "FaissIndex::search: k must be >= 0, got ", k);
        const index nq = queries.rows(), kk = std::min(k, size());
        TopK out;
        out.ids.resize(nq, kk);
        out.scores.resize(nq, kk);
        if (nq == 0 || kk == 0) return out;
        std::vector<std::int64_t> labels(static_cast<std::size_t>(nq * kk));
        detail::faiss_call("searching " + description_, [&] {
            index_->search(static_cast<std::int64_t>(nq), queries.data(), static_cast<std::int64_t>(kk),
                           out.scores.data(), labels.data());
        });
        for (index i = 0; i < nq * kk; ++i) {
            const std::int64_t id = labels[static_cast<std::size_t>(i)];
            out.ids.data()[i] = id >= 0 ? static_cast<index>(id) : index{-1};
            if (id < 0) out.scores.data()[i] = -std::numeric_limits<float>::infinity();
        }
        return out;
    }

    /// Inverted lists probed per query (IVF indexes only; more is slower and more exact).
    void set_nprobe(index nprobe) {
        require(nprobe >= 1, "nprobe must be >= 1, got ", nprobe);
        faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index_.get());
        require(ivf != nullptr, "nprobe applies to IVF indexes, not to ", description_);
        ivf->nprobe = static_cast<size_t>(std::min<index>(nprobe, static_cast<index>(ivf->nlist)));
    }

    /// Candidate list size of an HNSW search (HNSW indexes only; more is slower and more
    /// exact; at least k is used).
    void set_ef_search(index ef) {
        require(ef >= 1 && ef <= std::numeric_limits<int>::max(), "ef-search must be >= 1, got ", ef);
        faiss::IndexHNSW* hnsw = find_hnsw(index_.get());
        require(hnsw != nullptr, "ef-search applies to HNSW indexes, not to ", description_);
        hnsw->hnsw.efSearch = static_cast<int>(ef);
    }

private:
    void check_dim(const Matrix& m, const char* what) const {
        require(m.cols() == dim(), "FaissIndex::", what, ": vectors of dimension ", m.cols(),
                " for an index of dimension ", dim());
    }

    [[nodiscard]] static faiss::IndexHNSW* find_hnsw(faiss::Index* any) {
        if (auto* h = dynamic_cast<faiss::IndexHNSW*>(any)) return h;
        if (auto* t = dynamic_cast<faiss::IndexPreTransform*>(any)) return find_hnsw(t->index);
        if (auto* r = dynamic_cast<faiss::IndexRefine*>(any)) return find_hnsw(r->base_index);
        return nullptr;
    }

    std::unique_ptr<faiss::Index> index_;
    std::string description_;
};

static_assert(VectorIndex<FaissIndex>);

/// What an index file keeps beside the FAISS index.
struct IndexLabels {
    std::vector<std::string> doc_ids;  // (size): the document of each vector, in id order
    std::string corpus;                // identifies the corpus indexed (e.g. a fingerprint)
    std::string shard;                 // which part of it ("2 of 4"), empty for all of it
};

/// Writes `index` and `labels` (one document id per vector) to `path`, atomically.
inline void save_faiss_index(const std::filesystem::path& path, const FaissIndex& idx, const IndexLabels& labels) {
    require(static_cast<index>(labels.doc_ids.size()) == idx.size(), path.string(), ": ", labels.doc_ids.size(),
            " document ids for an index of ", idx.size(), " vectors");
    const nlohmann::json meta = {{"dim", idx.dim()},
                                 {"count", idx.size()},
                                 {"description", idx.description()},
                                 {"metric", "inner_product"},
                                 {"corpus", labels.corpus},
                                 {"shard", labels.shard}};
    const std::string meta_text = meta.dump();
    write_file_atomically(path, [&](std::ostream& out) {
        out.write(detail::faiss_file_magic.data(), static_cast<std::streamsize>(detail::faiss_file_magic.size()));
        detail::write_le<std::uint32_t>(out, 1);
        detail::write_le<std::uint32_t>(out, 0);
        detail::write_le<std::uint64_t>(out, meta_text.size());
        out.write(meta_text.data(), static_cast<std::streamsize>(meta_text.size()));
        for (const auto& id : labels.doc_ids) {
            require(id.size() <= std::numeric_limits<std::uint32_t>::max(), path.string(), ": a document id of ",
                    id.size(), " bytes");
            detail::write_le<std::uint32_t>(out, static_cast<std::uint32_t>(id.size()));
            out.write(id.data(), static_cast<std::streamsize>(id.size()));
        }
        detail::OstreamIOWriter writer(out);
        detail::faiss_call(path.string() + ": writing the FAISS index",
                           [&] { faiss::write_index(&idx.faiss_index(), &writer); });
        detail::write_le<std::uint64_t>(out, writer.bytes);
        detail::write_le<std::uint64_t>(out, writer.hash);
        out.write(detail::faiss_file_magic.data(), static_cast<std::streamsize>(detail::faiss_file_magic.size()));
    });
}

/// An index read back by `load_faiss_index`.
struct LoadedFaissIndex {
    FaissIndex index;
    IndexLabels labels;
};

/// Reads an index file written by `save_faiss_index`. Truncated or altered files, and
/// files of another kind, are an `ssm::Error` naming `path`.
[[nodiscard]] inline LoadedFaissIndex load_faiss_index(const std::filesystem::path& path) {
    const std::string file = path.string();
    std::error_code ec;
    const auto file_size = static_cast<std::uint64_t>(std::filesystem::file_size(path, ec));
    if (ec) fail(file, ": cannot read the index file: ", ec.message());
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(file, ": cannot open the index file");
    constexpr std::uint64_t head = 8 + 4 + 4 + 8, tail = 8 + 8 + 8;
    std::array<char, 8> magic{};
    in.read(magic.data(), 8);
    if (file_size < head + tail || std::string_view(magic.data(), 8) != detail::faiss_file_magic)
        fail(file, ": not an ssm FAISS index file (written by ssm-retrieve --save-index)");
    const auto version = detail::read_le<std::uint32_t>(in, file, "header");
    if (version != 1) fail(file, ": index file version ", version, " (this build reads version 1)");
    (void)detail::read_le<std::uint32_t>(in, file, "header");
    const auto meta_bytes = detail::read_le<std::uint64_t>(in, file, "header");
    if (meta_bytes > file_size - head - tail) fail(file, ": truncated (metadata of ", meta_bytes, " bytes)");
    std::string meta_text(static_cast<std::size_t>(meta_bytes), '\0');
    in.read(meta_text.data(), static_cast<std::streamsize>(meta_bytes));
    nlohmann::json meta;
    index dim = 0, count = 0;
    IndexLabels labels;
    std::string description;
    try {
        meta = nlohmann::json::parse(meta_text);
        const auto integer = [&](const char* key) {  // a float such as 1e300 is refused, not converted
            const nlohmann::json& v = meta.at(key);
            if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<std::uint64_t>() > INT64_MAX))
                fail(file, ": bad metadata: '", key, "' must be an integer that fits in 64 bits");
            return v.get<index>();
        };
        dim = integer("dim");
        count = integer("count");
        description = meta.at("description").get<std::string>();
        labels.corpus = meta.at("corpus").get<std::string>();
        labels.shard = meta.at("shard").get<std::string>();
        if (meta.at("metric").get<std::string>() != "inner_product")
            fail(file, ": metric '", meta.at("metric").get<std::string>(), "' (expected inner_product)");
    } catch (const nlohmann::json::exception& e) {
        fail(file, ": bad metadata: ", e.what());
    }
    if (dim < 1 || count < 0) fail(file, ": bad metadata: dim ", dim, ", count ", count);

    // The ids: each length checked against what is left before the trailer.
    std::uint64_t left = file_size - head - meta_bytes - tail;
    if (static_cast<std::uint64_t>(count) > left / 4) fail(file, ": truncated (", count, " document ids announced)");
    // Grown as the ids are read, so a count the bytes do not back allocates nothing.
    for (index k = 0; k < count; ++k) {
        if (left < 4) fail(file, ": truncated document ids");
        const auto len = detail::read_le<std::uint32_t>(in, file, "document ids");
        left -= 4;
        if (len > left) fail(file, ": truncated document ids");
        std::string& id = labels.doc_ids.emplace_back(len, '\0');
        in.read(id.data(), static_cast<std::streamsize>(len));
        left -= len;
    }
    if (!in) fail(file, ": truncated document ids");
    const auto faiss_at = static_cast<std::streamoff>(file_size - tail - left);

    // The trailer: the FAISS section's size and checksum.
    in.seekg(static_cast<std::streamoff>(file_size - tail));
    const auto faiss_bytes = detail::read_le<std::uint64_t>(in, file, "trailer");
    const auto expected_hash = detail::read_le<std::uint64_t>(in, file, "trailer");
    in.read(magic.data(), 8);
    if (!in || std::string_view(magic.data(), 8) != detail::faiss_file_magic || faiss_bytes != left)
        fail(file, ": truncated or damaged (the FAISS section does not end where the trailer says)");
    in.seekg(faiss_at);
    std::uint64_t hash = detail::fnv1a_start;
    std::vector<char> buffer(1 << 20);
    for (std::uint64_t n = faiss_bytes; n > 0;) {
        const auto chunk = static_cast<std::streamsize>(std::min<std::uint64_t>(n, buffer.size()));
        in.read(buffer.data(), chunk);
        if (in.gcount() != chunk) fail(file, ": truncated FAISS section");
        hash = detail::fnv1a(hash, buffer.data(), static_cast<std::size_t>(chunk));
        n -= static_cast<std::uint64_t>(chunk);
    }
    if (hash != expected_hash) fail(file, ": damaged (the FAISS section's checksum does not match)");

    in.clear();
    in.seekg(faiss_at);
    detail::IstreamIOReader reader(in, faiss_bytes);
    std::unique_ptr<faiss::Index> raw(
        detail::faiss_call(file + ": reading the FAISS index", [&] { return faiss::read_index(&reader); }));
    if (raw->d != dim || raw->ntotal != count)
        fail(file, ": the FAISS index holds ", raw->ntotal, " vectors of dimension ", raw->d, " but the metadata says ",
             count, " of ", dim);
    return LoadedFaissIndex{FaissIndex(std::move(raw), description), std::move(labels)};
}

}  // namespace ssm
