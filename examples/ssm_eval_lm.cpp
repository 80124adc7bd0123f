// ssm-eval-lm: how well a language model predicts a text — bits per byte, and for a model
// with a tokenizer perplexity too — over a text file or JSON Lines documents, read window
// by window so the file never has to fit in memory.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <ssm/core/progress.hpp>
#include <ssm/retrieval/jsonl.hpp>
#include <ssm/ssm.hpp>
#include <ssm/text/tokenizer.hpp>
#include <ssm/text/unicode.hpp>

#include "cli.hpp"
#include "inputs.hpp"

namespace {

constexpr const char* kHelp = R"(ssm-eval-lm — bits per byte and perplexity of a language model over a text

usage: ssm-eval-lm --model DIR --input FILE [options]

  --model DIR          checkpoint folder (Mamba, Mamba-2, Falcon-Mamba, MambaByte or a
                       SAMBA hybrid); text is tokenized with its tokenizer.json, or taken
                       as bytes when the vocabulary is the 256 byte values (MambaByte)
  --input FILE         the text to evaluate
  --format text|jsonl  FILE is one plain text (default), or JSON Lines with one document
                       {"text": "..."} a line; documents are evaluated apart
  --seq-len N          tokens per window (default 1024, at least 2)
  --context-carry      carry the recurrent state from each window to the next, so every
                       token after a document's first is predicted from its whole past
  --max-bytes N        evaluate only the first N bytes of text (0, the default: all)
  --json               print one JSON object instead of the summary line
  --bf16               keep the weight matrices in bfloat16 (float32 arithmetic)
  --int8               keep the weight matrices as int8 blocks (logits move by about 1%)
  --threads N          worker threads (default: all cores)
  --help               this text

The token stream of each document is cut into windows of --seq-len tokens. Without
--context-carry every window starts from the zero state and its first token is context
only: tokens 2..L of each window are predicted. With it, the state (a SAMBA model's
key/value window too) runs on across windows and only a document's first token goes
unpredicted. Log-probabilities come from a log-softmax in double precision.

Reports bits per byte: the negative log2-likelihood of the predicted tokens over the
bytes of text they cover (their decoded bytes). A model with a tokenizer also reports
perplexity, exp(mean negative log-likelihood per predicted token, in nats). With --json:
{"bits_per_byte", "perplexity" (tokenized models only), "tokens", "bytes", "seconds"},
where tokens and bytes count the predicted tokens and their bytes, and seconds the
evaluation after loading. A plain text is tokenized in pieces of about 1 MiB, cut
before a space or line break that follows a non-space character, where byte-level BPE
pre-tokenization splits anyway, so the tokens are those of the whole text (a tokenizer
that marks the start of a text, as LLaMA's prefix space does, marks each piece's start:
about one token a megabyte). A progress bar goes to stderr on a terminal.
)";

/// Bytes of input read per block.
constexpr std::size_t kBlock = std::size_t{1} << 20;

/// What the predicted tokens add up to.
struct Totals {
    double nll_nats = 0;     // −Σ ln p(token | past)
    std::int64_t tokens = 0;  // predicted tokens
    std::int64_t bytes = 0;   // their decoded bytes
};

/// Cuts each document's tokens into windows, runs the model over them and adds up the
/// negative log-likelihood of every predicted token.
template <class M>
class Evaluator {
public:
    /// `token_bytes[id]`: the bytes token `id` stands for in the text.
    Evaluator(const M& model, ssm::index seq_len, bool carry, std::vector<std::int32_t> token_bytes)
        : model_(model),
          seq_len_(seq_len),
          carry_(carry),
          token_bytes_(std::move(token_bytes)),
          batch_tokens_(std::max<ssm::index>(seq_len, 4096)),
          block_rows_(std::clamp<ssm::index>((ssm::index{1} << 22) / std::max<ssm::index>(1, model.vocab_size()),
                                             16, 1024)) {}

    /// Starts a new document: from the zero state, its first token unpredicted.
    void begin_document() {
        pending_.clear();
        has_past_ = false;
    }

    /// Appends tokens to the current document; full windows go to the model.
    void add(std::span<const std::int32_t> ids) {
        pending_.insert(pending_.end(), ids.begin(), ids.end());
        std::size_t pos = 0;
        const auto L = static_cast<std::size_t>(seq_len_);
        while (pending_.size() - pos >= L) {
            window(std::span<const std::int32_t>(pending_).subspan(pos, L));
            pos += L;
        }
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(pos));
    }

    /// Ends the current document: its last, shorter window goes to the model.
    void end_document() {
        if (!pending_.empty()) window(pending_);
        pending_.clear();
        has_past_ = false;
    }

    /// Runs whatever windows are still queued; the totals are then complete.
    [[nodiscard]] const Totals& finish() {
        run_queued();
        return totals_;
    }

private:
    void window(std::span<const std::int32_t> ids) {
        if (!carry_) {
            if (ids.size() < 2) return;  // a lone token predicts nothing
            queued_.add(ids);
            if (queued_.total_tokens() >= batch_tokens_) run_queued();
            return;
        }
        // Context carry: one window at a time, the state running on from the last one.
        if (!has_past_) {
            state_ = model_.make_state(1);
            if (ids.size() < 2) return;  // a document of one token predicts nothing
        }
        ssm::Batch batch;
        batch.add(ids);
        const ssm::ForwardResult r = model_.forward(batch, {ssm::Logits::None, false}, &state_, ws_);
        const ssm::index D = model_.hidden_size(), L = static_cast<ssm::index>(ids.size());
        if (has_past_)  // the last window's final hidden state predicts this one's first token
            score(ssm::ConstStridedMap(last_hidden_.data(), 1, D, Eigen::OuterStride<>(D)), ids.first(1));
        score(ssm::ConstStridedMap(r.hidden.data(), L - 1, D, Eigen::OuterStride<>(D)), ids.subspan(1));
        last_hidden_.assign(r.hidden.data() + (L - 1) * D, r.hidden.data() + L * D);
        has_past_ = true;
    }

    /// One forward over the queued windows (each from the zero state).
    void run_queued() {
        if (queued_.empty()) return;
        const ssm::ForwardResult r = model_.forward(queued_, {ssm::Logits::None, false}, nullptr, ws_);
        const ssm::index D = model_.hidden_size();
        const auto offsets = queued_.offsets();
        const auto tokens = queued_.tokens();
        for (ssm::index s = 0; s < queued_.size(); ++s) {
            const auto b = offsets[static_cast<std::size_t>(s)], e = offsets[static_cast<std::size_t>(s) + 1];
            score(ssm::ConstStridedMap(r.hidden.data() + b * D, e - b - 1, D, Eigen::OuterStride<>(D)),
                  tokens.subspan(static_cast<std::size_t>(b + 1), static_cast<std::size_t>(e - b - 1)));
        }
        queued_ = ssm::Batch();
    }

    /// Adds −ln p(targets[i] | hidden row i) for each row: the head's logits a block of
    /// rows at a time, then a log-softmax in double, max subtracted.
    void score(ssm::ConstStridedMap hidden, std::span<const std::int32_t> targets) {
        const ssm::index n = hidden.rows(), D = hidden.cols(), V = model_.vocab_size();
        for (ssm::index r0 = 0; r0 < n; r0 += block_rows_) {
            const ssm::index m = std::min(block_rows_, n - r0);
            logits_.resize(m, V);  // (m, V)
            model_.head().forward(
                ssm::ConstStridedMap(hidden.data() + r0 * hidden.outerStride(), m, D,
                                     Eigen::OuterStride<>(hidden.outerStride())),
                ssm::view(logits_));
            nll_.assign(static_cast<std::size_t>(m), 0.0);
            ssm::parallel_for(m, 4, [&](ssm::index i0, ssm::index i1) {
                for (ssm::index i = i0; i < i1; ++i) {
                    const float* row = logits_.data() + i * V;
                    const double mx = *std::max_element(row, row + V);
                    double sum = 0;
                    for (ssm::index v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
                    const auto t = targets[static_cast<std::size_t>(r0 + i)];
                    nll_[static_cast<std::size_t>(i)] = mx + std::log(sum) - static_cast<double>(row[t]);
                }
            });
            for (ssm::index i = 0; i < m; ++i) {  // in order: the same sum on any thread count
                const double x = nll_[static_cast<std::size_t>(i)];
                if (!std::isfinite(x))
                    ssm::fail("the model's log-probability of predicted token ", totals_.tokens + 1,
                              " is not finite (the logits hold NaN or infinity)");
                totals_.nll_nats += x;
                ++totals_.tokens;
                totals_.bytes += token_bytes_[static_cast<std::size_t>(targets[static_cast<std::size_t>(r0 + i)])];
            }
        }
    }

    const M& model_;
    ssm::index seq_len_;
    bool carry_;
    std::vector<std::int32_t> token_bytes_;
    ssm::index batch_tokens_, block_rows_;

    std::vector<std::int32_t> pending_;  // the current document's tokens not yet in a window
    ssm::Batch queued_;                  // windows waiting for one forward (no carry)
    typename M::state_type state_;       // the running state (context carry)
    std::vector<float> last_hidden_;     // (D): the previous window's last hidden state
    bool has_past_ = false;
    ssm::Workspace ws_;
    ssm::Matrix logits_;
    std::vector<double> nll_;
    Totals totals_;
};

/// Where a piece of text may end so that tokenizing the pieces one by one gives the tokens
/// of the whole: before a space or line break that follows a non-white-space character.
/// Byte-level pre-tokenizers split there (the GPT-2 pattern never joins such a character
/// to the space after it) and NFC does not compose across it; a normalizer that prepends
/// to the text (LLaMA's prefix space) prepends to each piece. The last such position of
/// `text` at `from` or after, or 0 when there is none.
[[nodiscard]] std::size_t piece_end(std::string_view text, std::size_t from) {
    for (std::size_t p = text.size(); p-- > std::max<std::size_t>(from, 1);) {
        if (text[p] != ' ' && text[p] != '\n') continue;
        std::size_t q = p - 1;  // the lead byte of the character before
        while (q > 0 && p - q < 4 && (static_cast<unsigned char>(text[q]) & 0xC0) == 0x80) --q;
        const auto d = ssm::unicode::decode_utf8_at(text, q);
        if (d.valid && q + d.length == p && !ssm::unicode::is_white_space(d.code_point)) return p;
    }
    return 0;
}

/// The length of `text` without an unfinished UTF-8 sequence at its end (text cut by
/// --max-bytes).
[[nodiscard]] std::size_t complete_utf8(std::string_view text) {
    for (std::size_t back = 1; back <= 3 && back <= text.size(); ++back) {
        const auto c = static_cast<unsigned char>(text[text.size() - back]);
        if ((c & 0xC0) == 0x80) continue;
        const std::size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? text.size() - back : text.size();
    }
    return text.size();
}

/// Reads the input and feeds its documents' tokens to `eval`.
template <class Eval>
class Reader {
public:
    Reader(std::filesystem::path path, const ssm::Tokenizer& tokenizer, std::int64_t max_bytes, Eval& eval)
        : path_(std::move(path)),
          tokenizer_(tokenizer),
          budget_(max_bytes > 0 ? max_bytes : std::numeric_limits<std::int64_t>::max()),
          eval_(eval) {}

    /// The whole file as one document, read a block at a time.
    void text(ssm::Progress& progress) {
        std::ifstream in = ssm::detail::open_text_file(path_);
        std::string buf;          // text read but not yet tokenized
        std::int64_t offset = 0;  // file offset of buf's first byte
        std::vector<char> block(kBlock);
        eval_.begin_document();
        for (bool end = false; !end;) {
            const auto want = static_cast<std::streamsize>(std::min<std::int64_t>(kBlock, budget_));
            std::streamsize got = 0;
            if (want > 0) {
                in.read(block.data(), want);
                got = in.gcount();
                if (in.bad()) ssm::fail(path_.string(), ": read error after byte ", offset + std::ssize(buf));
            }
            budget_ -= got;
            progress.advance(got);
            end = got < want || budget_ == 0;
            const std::size_t searched = buf.size();  // buf holds no place to cut before this
            buf.append(block.data(), static_cast<std::size_t>(got));
            std::size_t cut = buf.size();
            if (!tokenizer_.is_bytes()) {
                if (!end) {
                    cut = piece_end(buf, searched);
                    if (cut == 0 && buf.size() < 64 * kBlock) continue;  // no place to cut yet
                    if (cut == 0) cut = complete_utf8(buf);  // 64 MiB without a space: cut anyway
                } else if (budget_ == 0) {
                    cut = complete_utf8(buf);  // --max-bytes may end inside a character
                    buf.resize(cut);
                }
            }
            const std::string_view piece = std::string_view(buf).substr(0, cut);
            try {
                eval_.add(tokenizer_.encode(piece));
            } catch (const ssm::Error& e) {
                if (tokenizer_.is_bytes()) throw;
                ssm::fail(path_.string(), ": the text from byte ", offset, ": ", e.what());
            }
            offset += static_cast<std::int64_t>(cut);
            buf.erase(0, cut);
        }
        eval_.end_document();
    }

    /// JSON Lines: each line {"text": ...} is one document.
    void jsonl(ssm::Progress& progress) {
        std::ifstream in = ssm::detail::open_text_file(path_);
        std::string line;
        std::int64_t number = 0;
        while (budget_ > 0 && std::getline(in, line)) {
            ++number;
            progress.advance(std::ssize(line) + 1);
            std::string_view view = line;
            if (number == 1 && view.starts_with("\xEF\xBB\xBF")) view.remove_prefix(3);
            if (view.ends_with('\r')) view.remove_suffix(1);
            if (ssm::detail::is_blank(view)) continue;
            nlohmann::json object;
            try {
                object = nlohmann::json::parse(view);
            } catch (const nlohmann::json::exception& e) {
                ssm::fail_at_line(path_, number, std::string("not valid JSON: ") + e.what());
            }
            if (!object.is_object())
                ssm::fail_at_line(path_, number, std::string("expected a JSON object, got ") + object.type_name());
            std::string text = ssm::cli::string_field(object, "text", path_, number);
            if (std::ssize(text) > budget_) {
                text.resize(static_cast<std::size_t>(budget_));
                if (!tokenizer_.is_bytes()) text.resize(complete_utf8(text));
            }
            budget_ -= std::ssize(text);
            std::vector<std::int32_t> ids;
            try {
                ids = tokenizer_.encode(text);
            } catch (const ssm::Error& e) {
                ssm::fail_at_line(path_, number, e.what());
            }
            eval_.begin_document();
            eval_.add(ids);
            eval_.end_document();
        }
        if (in.bad()) ssm::fail(path_.string(), ": read error after line ", number);
    }

private:
    std::filesystem::path path_;
    const ssm::Tokenizer& tokenizer_;
    std::int64_t budget_;  // bytes of text still to read (--max-bytes)
    Eval& eval_;
};

/// 1234567 → "1,234,567".
std::string with_commas(std::int64_t v) {
    std::string digits = std::to_string(v < 0 ? -v : v), out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return v < 0 ? "-" + out : out;
}

template <class M>
int run(const M& model, const ssm::cli::Args& args, const std::string& model_dir, const std::filesystem::path& input,
        bool jsonl, ssm::index seq_len, std::int64_t max_bytes) {
    std::error_code ec;
    if (!std::filesystem::exists(std::filesystem::path(model_dir) / "tokenizer.json", ec) &&
        model.vocab_size() != ssm::ByteTokenizer::vocab_size)
        ssm::fail(model_dir, ": the checkpoint folder has no tokenizer.json and vocab_size ", model.vocab_size(),
                  " is not the 256 of a byte-level model, so the text cannot be tokenized");
    const ssm::Tokenizer tokenizer = ssm::Tokenizer::for_checkpoint(model_dir, model.vocab_size());
    std::vector<std::int32_t> token_bytes(static_cast<std::size_t>(model.vocab_size()), 1);
    if (!tokenizer.is_bytes())
        for (std::int32_t id = 0; id < tokenizer.bpe()->vocab_size(); ++id)
            if (tokenizer.bpe()->id_to_token(id))  // ids the file leaves out are never produced
                token_bytes[static_cast<std::size_t>(id)] = static_cast<std::int32_t>(tokenizer.token_bytes(id).size());

    const auto t0 = std::chrono::steady_clock::now();
    Evaluator<M> eval(model, seq_len, args.flag("context-carry"), std::move(token_bytes));
    const auto file_size = static_cast<std::int64_t>(std::filesystem::file_size(input, ec));
    Totals totals;
    {
        ssm::Progress progress("eval", ec ? 0 : (max_bytes > 0 && !jsonl ? std::min(max_bytes, file_size) : file_size),
                               "B");
        Reader reader(input, tokenizer, max_bytes, eval);
        if (jsonl)
            reader.jsonl(progress);
        else
            reader.text(progress);
        totals = eval.finish();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (totals.tokens == 0)
        ssm::fail(input.string(), ": nothing to evaluate: ",
                  jsonl ? "no document has two tokens or more" : "the text is shorter than two tokens");

    const double bits_per_byte =
        totals.nll_nats / std::log(2.0) / static_cast<double>(std::max<std::int64_t>(totals.bytes, 1));
    const double perplexity = std::exp(totals.nll_nats / static_cast<double>(totals.tokens));
    const bool bytes = tokenizer.is_bytes();
    if (args.flag("json")) {
        nlohmann::ordered_json j;
        j["bits_per_byte"] = bits_per_byte;
        if (!bytes) j["perplexity"] = perplexity;
        j["tokens"] = totals.tokens;
        j["bytes"] = totals.bytes;
        j["seconds"] = seconds;
        std::printf("%s\n", j.dump().c_str());
    } else {
        const std::string rate = with_commas(seconds > 0 ? static_cast<std::int64_t>(static_cast<double>(totals.bytes) / seconds) : 0);
        if (bytes)
            std::printf("bits/byte %.4f  (%s bytes, %.1f s, %s bytes/s)\n", bits_per_byte,
                        with_commas(totals.bytes).c_str(), seconds, rate.c_str());
        else
            std::printf("perplexity %.4f  bits/byte %.4f  (%s tokens, %s bytes, %.1f s, %s bytes/s)\n", perplexity,
                        bits_per_byte, with_commas(totals.tokens).c_str(), with_commas(totals.bytes).c_str(), seconds,
                        rate.c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return ssm::cli::run_main("ssm-eval-lm", [&] {
        const ssm::cli::Args args(argc, argv, {"model", "input", "format", "seq-len", "max-bytes", "threads"},
                                  {"context-carry", "json", "bf16", "int8"});
        if (args.flag("help")) {
            std::cout << kHelp;
            return 0;
        }
        const std::string model_dir = args.required("model");
        const std::filesystem::path input = args.required("input");
        const std::string format = args.get("format").value_or("text");
        if (format != "text" && format != "jsonl")
            throw ssm::cli::UsageError("--format must be 'text' or 'jsonl', got '" + format + "'");
        const auto seq_len = static_cast<ssm::index>(args.integer("seq-len", 1024, 2, 1LL << 30));
        const std::int64_t max_bytes = args.integer("max-bytes", 0, 0, INT64_MAX);
        ssm::set_num_threads(static_cast<int>(args.integer("threads", 0, 1, 1024)));
        (void)ssm::detail::open_text_file(input);  // a missing or unreadable input fails before the model loads
        return ssm::with_mamba_lm(model_dir, [&](auto& model) {
            return run(ssm::cli::apply_weight_options(model, args), args, model_dir, input, format == "jsonl", seq_len,
                       max_bytes);
        });
    });
}
