// ssm/text/bpe_tokenizer.hpp — BPE read from a HuggingFace tokenizer.json, byte-level (the
// GPT-2 / GPT-NeoX kind) or SentencePiece-style (the LLaMA kind: "▁" for spaces, <0xXX>
// byte fallback), giving the same ids as HF `tokenizers`.
//
// Encoding follows HF step by step: added tokens that are not normalized (special ones,
// usually) are cut out of the raw text; the rest is normalized (NFC, Prepend, Replace) and
// cut at the normalized added tokens; the pre-tokenizer splits what remains into words
// (the GPT-2 regex, literal Splits, Metaspace) and, for byte-level BPE, maps each byte to a
// printable character (ByteLevel); each word is merged by BPE, lowest merge rank first,
// exactly as `tokenizers`' Word::merge_all does it. Without ByteLevel a word's initial
// symbols are its characters, each unknown one replaced by its <0xXX> byte tokens.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <queue>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ssm/core/error.hpp"
#include "ssm/io/json_excerpt.hpp"
#include "ssm/text/unicode.hpp"

namespace ssm {

/// The GPT-2 pre-tokenization regex, as tokenizer.json files spell it.
inline constexpr std::string_view gpt2_pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

/// The pieces that the GPT-2 regex (`gpt2_pattern`) cuts valid UTF-8 `text` into, in
/// order; together they cover `text`. Hand-written with the regex's exact semantics
/// (alternatives tried in order, greedy runs), including `\s+(?!\S)`, which leaves the
/// last white-space character of a run that a non-space follows to the next piece, so
/// "a   b" gives "a", "  ", " b".
[[nodiscard]] inline std::vector<std::string_view> gpt2_pre_tokenize(std::string_view text) {
    enum class Kind : std::uint8_t { letter, number, space, other };
    std::vector<std::size_t> offsets;  // byte offset of each code point, then text.size()
    std::vector<char32_t> code_points;
    std::vector<Kind> kinds;
    offsets.reserve(text.size() + 1);
    code_points.reserve(text.size());
    kinds.reserve(text.size());
    for (std::size_t pos = 0; pos < text.size();) {
        const auto d = unicode::decode_utf8_at(text, pos);
        offsets.push_back(pos);
        code_points.push_back(d.code_point);
        kinds.push_back(unicode::is_letter(d.code_point)        ? Kind::letter
                        : unicode::is_number(d.code_point)      ? Kind::number
                        : unicode::is_white_space(d.code_point) ? Kind::space
                                                                : Kind::other);
        pos += d.length;
    }
    offsets.push_back(text.size());
    const std::size_t n = code_points.size();

    // End (code point index) of the regex match that starts at `i`.
    const auto match_end = [&](std::size_t i) -> std::size_t {
        // 's|'t|'re|'ve|'m|'ll|'d
        if (code_points[i] == U'\'' && i + 1 < n) {
            const char32_t c1 = code_points[i + 1];
            if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') return i + 2;
            if (i + 2 < n) {
                const char32_t c2 = code_points[i + 2];
                if (((c1 == U'r' || c1 == U'v') && c2 == U'e') || (c1 == U'l' && c2 == U'l')) {
                    return i + 3;
                }
            }
        }
        // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one kind.
        for (const Kind kind : {Kind::letter, Kind::number, Kind::other}) {
            std::size_t start = i;
            if (code_points[i] == U' ' && i + 1 < n && kinds[i + 1] == kind) start = i + 1;
            if (kinds[start] != kind) continue;
            std::size_t end = start;
            while (end < n && kinds[end] == kind) ++end;
            return end;
        }
        // `\s+(?!\S)|\s+`: the code point at i is white space here.
        std::size_t end = i;
        while (end < n && kinds[end] == Kind::space) ++end;
        if (end == n || end - i == 1) return end;
        return end - 1;
    };

    std::vector<std::string_view> pieces;
    for (std::size_t i = 0; i < n;) {
        const std::size_t end = match_end(i);
        pieces.push_back(text.substr(offsets[i], offsets[end] - offsets[i]));
        i = end;
    }
    return pieces;
}

/// BPE from a HuggingFace tokenizer.json.
///
/// Supported: model BPE (vocab; merges as "a b" strings or ["a", "b"] pairs; unk_token,
/// fuse_unk, byte_fallback, ignore_merges, continuing_subword_prefix, end_of_word_suffix;
/// dropout null or 0); normalizers NFC, Prepend, Replace (of a literal string) and Sequences
/// of them, or none; pre_tokenizer ByteLevel or a Sequence of Splits (the GPT-2 regex or a
/// literal string, any behaviour, not inverted) ending in ByteLevel — byte-level BPE — or,
/// without ByteLevel, none, Metaspace, Splits — character-level BPE, as LLaMA and SAMBA
/// tokenizers are; decoders ByteLevel, Replace (literal), ByteFallback, Fuse, Strip,
/// Metaspace and Sequences of them; added tokens with all their flags. The post_processor
/// is ignored: encode never adds special tokens.
class BpeTokenizer {
public:
    /// Reads `tokenizer_json`. An unreadable or malformed file, or one of a kind this class
    /// does not implement, gives ssm::Error naming the file and what is wrong.
    [[nodiscard]] static BpeTokenizer load(const std::filesystem::path& tokenizer_json) {
        const std::string source = tokenizer_json.string();
        std::error_code ec;
        if (std::filesystem::is_directory(tokenizer_json, ec)) {
            fail(source, ": is a folder, not a tokenizer.json file");
        }
        std::ifstream in(tokenizer_json, std::ios::binary);
        if (!in) fail(source, ": cannot open tokenizer file");
        std::ostringstream buffer;
        buffer << in.rdbuf();
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(buffer.str());
        } catch (const nlohmann::json::exception& e) {
            fail(source, ": not valid JSON (", e.what(), ")");
        }
        return from_json(j, source);
    }

    /// Builds the tokenizer from parsed tokenizer.json content; `source` names it in errors.
    [[nodiscard]] static BpeTokenizer from_json(const nlohmann::json& j,
                                                const std::string& source) {
        BpeTokenizer t;
        t.source_ = source;
        try {
            if (!j.is_object()) fail(source, ": tokenizer.json is not a JSON object");
            t.read_model(j, source);
            t.read_normalizer(value_of(j, "normalizer"), source);
            t.read_pre_tokenizer(value_of(j, "pre_tokenizer"), source);
            t.read_decoder(value_of(j, "decoder"), source);
            t.read_added_tokens(value_of(j, "added_tokens"), source);
        } catch (const nlohmann::json::exception& e) {
            fail(source, ": malformed tokenizer.json (", e.what(), ")");
        }
        return t;
    }

    /// Text -> ids, exactly as HF `tokenizers` `encode(text, add_special_tokens=False)` does
    /// (added/special tokens that appear literally in the text are matched as in HF).
    /// `text` must be valid UTF-8 (as any Python str is): otherwise ssm::Error.
    [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text) const {
        if (const auto bad = unicode::find_invalid_utf8(text)) {
            fail(source_, ": cannot encode text that is not valid UTF-8 (byte ",
                 static_cast<int>(static_cast<unsigned char>(text[*bad])), " at offset ", *bad,
                 ")");
        }
        // 1. Added tokens matched on the raw text.
        std::vector<Piece> raw;
        split_on_added_tokens(std::string(text), raw_matches_, raw, true);
        // 2. The rest normalized, then cut at the normalized added tokens.
        std::vector<Piece> pieces;
        for (Piece& p : raw) {
            if (p.token >= 0) {
                pieces.push_back(std::move(p));
            } else {
                const bool at_start = p.at_start;
                split_on_added_tokens(normalize(std::move(p.text)), normalized_matches_, pieces,
                                      at_start);
            }
        }
        // 3. Pre-tokenization, step by step, on the pieces not yet tokens.
        for (const PreTokenizerStep& step : pre_tokenizer_) {
            std::vector<Piece> next;
            next.reserve(pieces.size());
            for (Piece& p : pieces) {
                if (p.token >= 0) {
                    next.push_back(std::move(p));
                } else {
                    apply_pre_tokenizer_step(step, p, next);
                }
            }
            pieces = std::move(next);
        }
        // 4. BPE on each word, each distinct word merged once.
        WordCache cache;
        std::vector<std::int32_t> ids;
        ids.reserve(text.size() / 3 + 1);
        for (const Piece& p : pieces) {
            if (p.token >= 0) {
                ids.push_back(p.token);
                continue;
            }
            auto it = cache.find(std::string_view(p.text));
            if (it == cache.end()) it = cache.emplace(p.text, merge_word(p.text)).first;
            ids.insert(ids.end(), it->second.begin(), it->second.end());
        }
        return ids;
    }

    /// ids -> text (bytes joined; special tokens kept unless skip_special). The bytes may
    /// end inside a UTF-8 sequence. Ids outside the vocabulary: ssm::Error naming the
    /// position and id.
    ///
    /// Character-level tokenizers run their decoder chain as HF does, except that byte
    /// tokens (<0xXX>) give their raw bytes: where HF writes one U+FFFD per byte of a run
    /// that is not valid UTF-8, this returns the bytes themselves.
    [[nodiscard]] std::string decode(std::span<const std::int32_t> ids,
                                     bool skip_special = false) const {
        return decode_tokens(ids, skip_special, false);
    }

    /// The bytes `id` adds when it follows other tokens: `decode` of a sequence is the
    /// concatenation of the first token's `decode` and the later tokens' `token_bytes`
    /// (what streaming output and stop strings need). It differs from `decode({id})` only
    /// for decoders that treat the start of the text apart (Metaspace, Strip after Fuse).
    [[nodiscard]] std::string token_bytes(std::int32_t id) const {
        return decode_tokens({&id, 1}, false, true);
    }

    /// Largest id (of the vocabulary and the added tokens) + 1.
    [[nodiscard]] std::int32_t vocab_size() const noexcept { return vocab_size_; }

    [[nodiscard]] std::optional<std::int32_t> token_to_id(std::string_view token) const {
        if (const auto it = added_by_content_.find(std::string(token));
            it != added_by_content_.end()) {
            return added_[it->second].id;
        }
        if (const auto it = vocab_.find(std::string(token)); it != vocab_.end()) return it->second;
        return std::nullopt;
    }

    [[nodiscard]] std::optional<std::string> id_to_token(std::int32_t id) const {
        if (const std::string* token = token_of(id)) return *token;
        return std::nullopt;
    }

    /// Whether `id` is an added token marked special (what decode's skip_special drops).
    [[nodiscard]] bool is_special(std::int32_t id) const noexcept {
        const auto it = added_by_id_.find(id);
        return it != added_by_id_.end() && added_[it->second].special;
    }

private:
    enum class SplitBehavior {
        removed,
        isolated,
        merged_with_previous,
        merged_with_next,
        contiguous
    };

    struct PreTokenizerStep {
        enum class Kind {
            split_gpt2,
            split_literal,
            byte_level,
            metaspace
        } kind = Kind::byte_level;
        std::string literal;  // split_literal: what to split on; metaspace: the replacement
        enum class Prepend { always, first, never } prepend = Prepend::always;  // metaspace
        bool split = true;                                                      // metaspace
        SplitBehavior behavior = SplitBehavior::isolated;                       // split_*
        bool add_prefix_space = true;                                           // byte_level
        bool use_regex = true;                                                  // byte_level
    };

    struct AddedToken {
        std::string content;
        std::int32_t id = 0;
        bool single_word = false, lstrip = false, rstrip = false, normalized = true,
             special = false;
    };

    /// Added tokens to find in a text: leftmost match first, longest at that position.
    struct MatchSet {
        std::vector<std::string> patterns;
        std::vector<std::size_t> tokens;                          // index into added_, per pattern
        std::array<std::vector<std::size_t>, 256> by_first_byte;  // patterns, longest first
    };

    struct Piece {
        std::string text;
        std::int32_t token = -1;  // the added token this piece is, or -1
        bool at_start = false;    // begins at the start of the text (Metaspace "first")
    };

    struct NormalizerStep {
        enum class Kind { nfc, prepend, replace } kind = Kind::nfc;
        std::string text, content;  // prepend: text; replace: text -> content
    };

    struct DecoderStep {
        enum class Kind {
            byte_level,
            replace,
            byte_fallback,
            fuse,
            strip,
            metaspace
        } kind = Kind::fuse;
        std::string text,
            content;  // replace: text -> content; strip, metaspace: text is the character
        std::size_t start = 0, stop = 0;  // strip
        bool strip_first = true;          // metaspace: prepend_scheme is not "never"
    };

    struct MergeResult {
        std::uint32_t rank;
        std::int32_t new_id;
    };

    struct StringHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept {
            return std::hash<std::string_view>{}(s);
        }
    };
    using WordCache =
        std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>>;

    // ---- tokenizer.json reading ----------------------------------------------------------

    /// `obj[key]`, or nullptr when absent or null.
    static const nlohmann::json* value_of(const nlohmann::json& obj, const char* key) {
        if (!obj.is_object()) return nullptr;
        const auto it = obj.find(key);
        return it == obj.end() || it->is_null() ? nullptr : &*it;
    }

    static bool flag(const nlohmann::json& obj, const char* key, bool fallback,
                     const std::string& where) {
        const nlohmann::json* v = value_of(obj, key);
        if (v == nullptr) return fallback;
        if (!v->is_boolean()) fail(where, ": \"", key, "\" must be true or false, got ", detail::json_excerpt(*v));
        return v->get<bool>();
    }

    static std::optional<std::string> text_field(const nlohmann::json& obj, const char* key,
                                                 const std::string& where) {
        const nlohmann::json* v = value_of(obj, key);
        if (v == nullptr) return std::nullopt;
        if (!v->is_string()) fail(where, ": \"", key, "\" must be a string, got ", detail::json_excerpt(*v));
        return v->get<std::string>();
    }

    static std::string type_of(const nlohmann::json& obj, const std::string& where,
                               const char* what) {
        if (!obj.is_object()) fail(where, ": ", what, " is not a JSON object");
        const auto type = text_field(obj, "type", where);
        if (!type) fail(where, ": ", what, " has no \"type\"");
        return *type;
    }

    void read_model(const nlohmann::json& j, const std::string& source) {
        const nlohmann::json* model = value_of(j, "model");
        if (model == nullptr || !model->is_object()) fail(source, ": no \"model\" object");
        if (const auto type = text_field(*model, "type", source); type && *type != "BPE") {
            fail(source, ": model type \"", *type,
                 "\" is not supported (only byte-level BPE, the GPT-2 / GPT-NeoX kind)");
        }
        const nlohmann::json* vocab = value_of(*model, "vocab");
        if (vocab == nullptr || !vocab->is_object())
            fail(source, ": model has no \"vocab\" object");
        const nlohmann::json* merges = value_of(*model, "merges");
        if (merges == nullptr || !merges->is_array())
            fail(source, ": model has no \"merges\" list");

        std::int64_t max_id = -1;
        vocab_.reserve(vocab->size());
        for (auto entry = vocab->begin(); entry != vocab->end(); ++entry) {
            const std::string& token = entry.key();
            const nlohmann::json& id_json = entry.value();
            const std::int64_t id = id_json.is_number_integer() ? id_json.get<std::int64_t>() : -1;
            if (id < 0 || id >= std::numeric_limits<std::int32_t>::max()) {
                fail(source, ": vocab entry \"", token, "\" has id ", detail::json_excerpt(id_json),
                     " (ids are integers in [0, 2^31 - 1))");
            }
            vocab_[token] = static_cast<std::int32_t>(id);
            vocab_r_[static_cast<std::int32_t>(id)] = token;
            max_id = std::max(max_id, id);
        }
        vocab_size_ = static_cast<std::int32_t>(max_id + 1);

        if (const nlohmann::json* dropout = value_of(*model, "dropout")) {
            if (!dropout->is_number() || dropout->get<double>() != 0.0) {
                fail(source, ": BPE dropout ", detail::json_excerpt(*dropout),
                     " is not supported (inference needs null or 0)");
            }
        }
        unk_token_ = text_field(*model, "unk_token", source);
        continuing_subword_prefix_ = text_field(*model, "continuing_subword_prefix", source);
        end_of_word_suffix_ = text_field(*model, "end_of_word_suffix", source);
        fuse_unk_ = flag(*model, "fuse_unk", false, source);
        byte_fallback_ = flag(*model, "byte_fallback", false, source);
        ignore_merges_ = flag(*model, "ignore_merges", false, source);

        const std::size_t prefix_len =
            continuing_subword_prefix_ ? continuing_subword_prefix_->size() : 0;
        const auto id_of = [&](const std::string& token, std::size_t index, const std::string& a,
                               const std::string& b) {
            const auto it = vocab_.find(token);
            if (it == vocab_.end()) {
                fail(source, ": merge ", index, " (\"", a, "\" \"", b, "\") names \"", token,
                     "\", which is not in the vocabulary");
            }
            return it->second;
        };
        merges_.reserve(merges->size());
        std::uint32_t rank = 0;
        for (std::size_t index = 0; index < merges->size(); ++index) {
            const nlohmann::json& m = (*merges)[index];
            std::string a, b;
            if (m.is_string()) {
                const auto& line = m.get_ref<const std::string&>();
                if (line.starts_with("#version")) continue;
                const std::size_t space = line.find(' ');
                if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
                    fail(source, ": merge ", index, " (\"", line,
                         "\") is not two tokens separated by one space");
                }
                a = line.substr(0, space);
                b = line.substr(space + 1);
            } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
                a = m[0].get<std::string>();
                b = m[1].get<std::string>();
            } else {
                fail(source, ": merge ", index,
                     " is neither \"a b\" nor [\"a\", \"b\"]: ", detail::json_excerpt(m));
            }
            const std::int32_t a_id = id_of(a, index, a, b);
            const std::int32_t b_id = id_of(b, index, a, b);
            if (b.size() < prefix_len) {
                fail(source, ": merge ", index, " (\"", a, "\" \"", b,
                     "\"): the second token is shorter than continuing_subword_prefix");
            }
            const std::int32_t new_id = id_of(a + b.substr(prefix_len), index, a, b);
            merges_[pair_key(a_id, b_id)] = MergeResult{rank, new_id};  // a repeat: later wins
            ++rank;
        }

        // GPT-2's byte -> printable character map: printable Latin-1 bytes stand for
        // themselves, the other 68 bytes take U+0100.. in byte order.
        char32_t next = 0x100;
        char_bytes_.fill(-1);
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            const char32_t c = printable ? static_cast<char32_t>(b) : next++;
            byte_chars_[b].clear();
            unicode::append_utf8(byte_chars_[b], c);
            char_bytes_[c] = static_cast<std::int16_t>(b);
            const auto it = vocab_.find(byte_chars_[b]);
            byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
        }
    }

    void read_normalizer(const nlohmann::json* normalizer, const std::string& source) {
        if (normalizer == nullptr) return;
        const std::string type = type_of(*normalizer, source, "normalizer");
        if (type == "NFC") {
            normalizer_.push_back({NormalizerStep::Kind::nfc, {}, {}});
        } else if (type == "Prepend") {
            const auto text = text_field(*normalizer, "prepend", source);
            if (!text) fail(source, ": Prepend normalizer has no \"prepend\" string");
            normalizer_.push_back({NormalizerStep::Kind::prepend, *text, {}});
        } else if (type == "Replace") {
            normalizer_.push_back(read_replace(*normalizer, source, "normalizer"));
        } else if (type == "Sequence") {
            const nlohmann::json* list = value_of(*normalizer, "normalizers");
            if (list == nullptr || !list->is_array()) {
                fail(source, ": Sequence normalizer has no \"normalizers\" list");
            }
            for (const auto& n : *list) read_normalizer(&n, source);
        } else {
            fail(source, ": normalizer \"", type,
                 "\" is not supported (only NFC, Prepend, Replace of a string, Sequences of them, "
                 "or none)");
        }
    }

    void read_pre_tokenizer(const nlohmann::json* pre, const std::string& source) {
        if (pre != nullptr) add_pre_tokenizer_steps(*pre, source);
        const auto count = [&](PreTokenizerStep::Kind kind) {
            return std::count_if(pre_tokenizer_.begin(), pre_tokenizer_.end(),
                                 [&](const PreTokenizerStep& s) { return s.kind == kind; });
        };
        const auto byte_levels = count(PreTokenizerStep::Kind::byte_level);
        byte_level_ = byte_levels > 0;
        if (byte_level_ &&
            (byte_levels != 1 || pre_tokenizer_.back().kind != PreTokenizerStep::Kind::byte_level ||
             count(PreTokenizerStep::Kind::metaspace) > 0)) {
            fail(source,
                 ": a byte-level pre_tokenizer must be ByteLevel, or a Sequence of Splits ending "
                 "in one "
                 "ByteLevel (and no Metaspace)");
        }
    }

    void add_pre_tokenizer_steps(const nlohmann::json& pre, const std::string& source) {
        const std::string type = type_of(pre, source, "pre_tokenizer");
        PreTokenizerStep step;
        if (type == "Sequence") {
            const nlohmann::json* list = value_of(pre, "pretokenizers");
            if (list == nullptr || !list->is_array()) {
                fail(source, ": Sequence pre_tokenizer has no \"pretokenizers\" list");
            }
            for (const auto& p : *list) add_pre_tokenizer_steps(p, source);
            return;
        }
        if (type == "Metaspace") {
            step.kind = PreTokenizerStep::Kind::metaspace;
            step.literal = one_character(pre, "replacement", "\xE2\x96\x81", source, "Metaspace");
            const auto scheme = text_field(pre, "prepend_scheme", source).value_or("always");
            if (scheme == "always") {
                step.prepend = PreTokenizerStep::Prepend::always;
            } else if (scheme == "first") {
                step.prepend = PreTokenizerStep::Prepend::first;
            } else if (scheme == "never") {
                step.prepend = PreTokenizerStep::Prepend::never;
            } else {
                fail(source, ": Metaspace prepend_scheme \"", scheme, "\" is unknown");
            }
            if (!flag(pre, "add_prefix_space", true, source))
                step.prepend = PreTokenizerStep::Prepend::never;
            step.split = flag(pre, "split", true, source);
        } else if (type == "ByteLevel") {
            step.kind = PreTokenizerStep::Kind::byte_level;
            step.add_prefix_space = flag(pre, "add_prefix_space", true, source);
            step.use_regex = flag(pre, "use_regex", true, source);
        } else if (type == "Split") {
            const nlohmann::json* pattern = value_of(pre, "pattern");
            if (pattern == nullptr || !pattern->is_object()) {
                fail(source, ": Split pre_tokenizer has no \"pattern\" object");
            }
            if (const auto regex = text_field(*pattern, "Regex", source)) {
                if (*regex != gpt2_pattern) {
                    fail(source, ": Split regex \"", *regex,
                         "\" is not supported (only the GPT-2 pattern ", gpt2_pattern, ")");
                }
                step.kind = PreTokenizerStep::Kind::split_gpt2;
            } else if (const auto literal = text_field(*pattern, "String", source)) {
                if (literal->empty()) fail(source, ": Split on an empty string");
                step.kind = PreTokenizerStep::Kind::split_literal;
                step.literal = *literal;
            } else {
                fail(source, ": Split pattern is neither {\"Regex\": ...} nor {\"String\": ...}");
            }
            const auto behavior = text_field(pre, "behavior", source).value_or("Isolated");
            if (behavior == "Removed") {
                step.behavior = SplitBehavior::removed;
            } else if (behavior == "Isolated") {
                step.behavior = SplitBehavior::isolated;
            } else if (behavior == "MergedWithPrevious") {
                step.behavior = SplitBehavior::merged_with_previous;
            } else if (behavior == "MergedWithNext") {
                step.behavior = SplitBehavior::merged_with_next;
            } else if (behavior == "Contiguous") {
                step.behavior = SplitBehavior::contiguous;
            } else {
                fail(source, ": Split behavior \"", behavior, "\" is unknown");
            }
            if (flag(pre, "invert", false, source)) {
                fail(source, ": Split with \"invert\": true is not supported");
            }
        } else {
            fail(source, ": pre_tokenizer \"", type,
                 "\" is not supported (only ByteLevel, Metaspace, Split and Sequence)");
        }
        pre_tokenizer_.push_back(std::move(step));
    }

    void read_decoder(const nlohmann::json* decoder, const std::string& source) {
        if (decoder == nullptr) return;
        const std::string type = type_of(*decoder, source, "decoder");
        has_decoder_ = true;
        DecoderStep step;
        using Kind = DecoderStep::Kind;
        if (type == "Sequence") {
            const nlohmann::json* list = value_of(*decoder, "decoders");
            if (list == nullptr || !list->is_array()) {
                fail(source, ": Sequence decoder has no \"decoders\" list");
            }
            for (const auto& d : *list) read_decoder(&d, source);
            return;
        }
        if (type == "ByteLevel") {
            step.kind = Kind::byte_level;
        } else if (type == "Replace") {
            const NormalizerStep r = read_replace(*decoder, source, "decoder");
            step.kind = Kind::replace;
            step.text = r.text;
            step.content = r.content;
        } else if (type == "ByteFallback") {
            step.kind = Kind::byte_fallback;
        } else if (type == "Fuse") {
            step.kind = Kind::fuse;
        } else if (type == "Strip") {
            step.kind = Kind::strip;
            step.text = one_character(*decoder, "content", " ", source, "Strip decoder");
            const auto count = [&](const char* key) {
                const nlohmann::json* v = value_of(*decoder, key);
                if (v == nullptr) return std::size_t{0};
                if (!v->is_number_unsigned())
                    fail(source, ": Strip decoder \"", key, "\" must be a count, got ", detail::json_excerpt(*v));
                return v->get<std::size_t>();
            };
            step.start = count("start");
            step.stop = count("stop");
        } else if (type == "Metaspace") {
            step.kind = Kind::metaspace;
            step.text =
                one_character(*decoder, "replacement", "\xE2\x96\x81", source, "Metaspace decoder");
            const auto scheme = text_field(*decoder, "prepend_scheme", source).value_or("always");
            step.strip_first =
                scheme != "never" && flag(*decoder, "add_prefix_space", true, source);
        } else {
            fail(source, ": decoder \"", type,
                 "\" is not supported (only ByteLevel, Replace, ByteFallback, Fuse, Strip, "
                 "Metaspace, Sequence)");
        }
        decoder_.push_back(std::move(step));
    }

    /// `obj[key]` (or `fallback`), which must be one character (UTF-8).
    static std::string one_character(const nlohmann::json& obj, const char* key,
                                     const char* fallback, const std::string& source,
                                     const char* what) {
        const std::string c = text_field(obj, key, source).value_or(fallback);
        if (c.empty() || unicode::decode_utf8_at(c, 0).length != c.size())
            fail(source, ": ", what, " \"", key, "\" must be one character, got \"", c, "\"");
        return c;
    }

    /// A Replace normalizer or decoder of a literal string.
    static NormalizerStep read_replace(const nlohmann::json& r, const std::string& source,
                                       const char* what) {
        const nlohmann::json* pattern = value_of(r, "pattern");
        if (pattern == nullptr || !pattern->is_object())
            fail(source, ": Replace ", what, " has no \"pattern\" object");
        const auto text = text_field(*pattern, "String", source);
        if (!text)
            fail(source, ": Replace ", what,
                 " pattern must be {\"String\": ...} (a regex is not supported)");
        if (text->empty()) fail(source, ": Replace ", what, " of an empty string");
        const auto content = text_field(r, "content", source);
        if (!content) fail(source, ": Replace ", what, " has no \"content\" string");
        return {NormalizerStep::Kind::replace, *text, *content};
    }

    void read_added_tokens(const nlohmann::json* list, const std::string& source) {
        if (list != nullptr) {
            if (!list->is_array()) fail(source, ": \"added_tokens\" is not a list");
            for (std::size_t i = 0; i < list->size(); ++i) {
                const nlohmann::json& e = (*list)[i];
                const std::string where = source + ": added_tokens[" + std::to_string(i) + "]";
                if (!e.is_object()) fail(where, " is not an object");
                AddedToken t;
                const auto content = text_field(e, "content", where);
                if (!content) fail(where, " has no \"content\"");
                t.content = *content;
                const nlohmann::json* id = value_of(e, "id");
                if (id == nullptr || !id->is_number_integer() || id->get<std::int64_t>() < 0 ||
                    id->get<std::int64_t>() >= std::numeric_limits<std::int32_t>::max()) {
                    fail(where, " (\"", t.content, "\") needs an integer \"id\" in [0, 2^31 - 1)");
                }
                t.special = flag(e, "special", false, where);
                t.single_word = flag(e, "single_word", false, where);
                t.lstrip = flag(e, "lstrip", false, where);
                t.rstrip = flag(e, "rstrip", false, where);
                t.normalized = flag(e, "normalized", !t.special, where);
                if (t.content.empty()) continue;  // HF ignores empty added tokens
                // HF keeps the vocabulary's id for content it already has.
                const auto in_vocab = vocab_.find(t.content);
                t.id = in_vocab != vocab_.end()
                           ? in_vocab->second
                           : static_cast<std::int32_t>(id->get<std::int64_t>());
                vocab_size_ = std::max(vocab_size_, t.id + 1);
                if (const auto old = added_by_content_.find(t.content);
                    old != added_by_content_.end()) {
                    added_[old->second] = t;  // the same content again: the later entry wins
                    added_by_id_[t.id] = old->second;
                    continue;
                }
                added_by_content_[t.content] = added_.size();
                added_by_id_[t.id] = added_.size();
                added_.push_back(std::move(t));
            }
        }
        for (const auto& [id, index] : added_by_id_) {
            const AddedToken& t = added_[index];
            if (t.id != id) continue;  // an id whose entry was replaced
            MatchSet& set = t.normalized ? normalized_matches_ : raw_matches_;
            std::string pattern = t.normalized ? normalize(t.content) : t.content;
            // Content that normalizes to nothing matches nothing (an empty pattern would
            // "match" without advancing, forever).
            if (pattern.empty() || std::find(set.patterns.begin(), set.patterns.end(), pattern) !=
                                       set.patterns.end()) {
                continue;
            }
            set.patterns.push_back(std::move(pattern));
            set.tokens.push_back(index);
        }
        for (MatchSet* set : {&raw_matches_, &normalized_matches_}) {
            for (std::size_t p = 0; p < set->patterns.size(); ++p) {
                set->by_first_byte[static_cast<unsigned char>(set->patterns[p][0])].push_back(p);
            }
            for (auto& list_for_byte : set->by_first_byte) {
                std::stable_sort(list_for_byte.begin(), list_for_byte.end(),
                                 [&](std::size_t x, std::size_t y) {
                                     return set->patterns[x].size() > set->patterns[y].size();
                                 });
            }
        }
    }

    // ---- encoding --------------------------------------------------------------------------

    static constexpr std::uint64_t pair_key(std::int32_t a, std::int32_t b) noexcept {
        return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
               static_cast<std::uint32_t>(b);
    }

    [[nodiscard]] const MergeResult* find_merge(std::int32_t a, std::int32_t b) const {
        const auto it = merges_.find(pair_key(a, b));
        return it == merges_.end() ? nullptr : &it->second;
    }

    /// Cuts `text` at the added tokens of `set` (HF AddedVocabulary::find_matches) and
    /// appends the non-empty pieces to `out`.
    void split_on_added_tokens(std::string text, const MatchSet& set, std::vector<Piece>& out,
                               bool at_start) const {
        if (text.empty()) return;
        if (set.patterns.empty()) {
            out.push_back({std::move(text), -1, at_start});
            return;
        }
        const std::string_view view = text;
        std::size_t start_offset = 0;  // end of what the pieces so far cover
        std::size_t search = 0;        // where the next match may start
        while (search < view.size()) {
            // The leftmost position where some pattern matches, and the longest one there.
            std::optional<std::size_t> found;  // pattern index
            std::size_t start = search;
            for (; start < view.size(); ++start) {
                for (const std::size_t p :
                     set.by_first_byte[static_cast<unsigned char>(view[start])]) {
                    if (view.substr(start).starts_with(set.patterns[p])) {
                        found = p;
                        break;
                    }
                }
                if (found) break;
            }
            if (!found) break;
            std::size_t stop = start + set.patterns[*found].size();
            search = stop;  // the next match starts after this one, kept or not
            const AddedToken& token = added_[set.tokens[*found]];
            if (token.single_word) {
                const bool space_before = start == 0 || !ends_with_word(view.substr(0, start));
                const bool space_after =
                    stop == view.size() || !starts_with_word(view.substr(stop));
                if (!space_before || !space_after) continue;
            }
            if (token.lstrip)
                start = std::max(start - trailing_white_space(view.substr(0, start)), start_offset);
            if (token.rstrip) stop += leading_white_space(view.substr(stop));
            if (start_offset < start)
                out.push_back({std::string(view.substr(start_offset, start - start_offset)), -1,
                               at_start && start_offset == 0});
            out.push_back(
                {std::string(view.substr(start, stop - start)), token.id, at_start && start == 0});
            start_offset = stop;
        }
        if (start_offset < view.size())
            out.push_back(
                {std::string(view.substr(start_offset)), -1, at_start && start_offset == 0});
    }

    static bool ends_with_word(std::string_view s) {
        std::size_t pos = s.size() - 1;
        while (pos > 0 && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) --pos;
        return unicode::is_word_character(unicode::decode_utf8_at(s, pos).code_point);
    }

    static bool starts_with_word(std::string_view s) {
        return unicode::is_word_character(unicode::decode_utf8_at(s, 0).code_point);
    }

    /// Bytes of white space at the start of `s`.
    static std::size_t leading_white_space(std::string_view s) {
        std::size_t pos = 0;
        while (pos < s.size()) {
            const auto d = unicode::decode_utf8_at(s, pos);
            if (!unicode::is_white_space(d.code_point)) break;
            pos += d.length;
        }
        return pos;
    }

    /// Bytes of white space at the end of `s`.
    static std::size_t trailing_white_space(std::string_view s) {
        std::size_t end = s.size();
        while (end > 0) {
            std::size_t pos = end - 1;
            while (pos > 0 && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) --pos;
            if (!unicode::is_white_space(unicode::decode_utf8_at(s, pos).code_point)) break;
            end = pos;
        }
        return s.size() - end;
    }

    /// One pre-tokenizer step on one piece; appends the non-empty results to `out`.
    static void apply_pre_tokenizer_step(const PreTokenizerStep& step, Piece& input,
                                         std::vector<Piece>& out) {
        using Kind = PreTokenizerStep::Kind;
        std::string& piece = input.text;
        const bool at_start = input.at_start;
        if (step.kind == Kind::byte_level) {
            if (step.add_prefix_space && piece.front() != ' ') piece.insert(piece.begin(), ' ');
            if (!step.use_regex) {
                out.push_back({std::move(piece), -1, at_start});
                return;
            }
            bool first = at_start;
            for (const std::string_view word : gpt2_pre_tokenize(piece)) {
                out.push_back({std::string(word), -1, first});
                first = false;
            }
            return;
        }
        if (step.kind == Kind::metaspace) {  // HF Metaspace: spaces -> replacement, prefix, split
            std::string replaced;
            replaced.reserve(piece.size() + step.literal.size());
            for (const char c : piece) {
                if (c == ' ')
                    replaced += step.literal;
                else
                    replaced += c;
            }
            const bool prepend = step.prepend == PreTokenizerStep::Prepend::always ||
                                 (step.prepend == PreTokenizerStep::Prepend::first && at_start);
            if (prepend && !replaced.starts_with(step.literal)) replaced.insert(0, step.literal);
            if (!step.split) {
                out.push_back({std::move(replaced), -1, at_start});
                return;
            }
            PreTokenizerStep split;
            split.kind = Kind::split_literal;
            split.literal = step.literal;
            split.behavior = SplitBehavior::merged_with_next;
            Piece p{std::move(replaced), -1, at_start};
            apply_pre_tokenizer_step(split, p, out);
            return;
        }
        // Split: the segments that cover the piece, each marked match or not ...
        struct Segment {
            std::size_t begin, end;
            bool is_match;
        };
        std::vector<Segment> segments;
        const std::string_view view = piece;
        if (step.kind == Kind::split_gpt2) {
            for (const std::string_view word : gpt2_pre_tokenize(view)) {
                const auto begin = static_cast<std::size_t>(word.data() - view.data());
                segments.push_back({begin, begin + word.size(), true});
            }
        } else {
            std::size_t prev = 0;
            for (std::size_t at = view.find(step.literal); at != std::string_view::npos;
                 at = view.find(step.literal, at + step.literal.size())) {
                if (prev != at) segments.push_back({prev, at, false});
                segments.push_back({at, at + step.literal.size(), true});
                prev = at + step.literal.size();
            }
            if (prev != view.size()) segments.push_back({prev, view.size(), false});
        }
        // ... then joined or dropped as the behaviour says (HF NormalizedString::split).
        std::vector<std::pair<std::size_t, std::size_t>> kept;
        bool previous_match = false;
        switch (step.behavior) {
            case SplitBehavior::isolated:
                for (const Segment& s : segments) kept.emplace_back(s.begin, s.end);
                break;
            case SplitBehavior::removed:
                for (const Segment& s : segments) {
                    if (!s.is_match) kept.emplace_back(s.begin, s.end);
                }
                break;
            case SplitBehavior::contiguous:
                for (const Segment& s : segments) {
                    if (s.is_match == previous_match && !kept.empty()) {
                        kept.back().second = s.end;
                    } else {
                        kept.emplace_back(s.begin, s.end);
                    }
                    previous_match = s.is_match;
                }
                break;
            case SplitBehavior::merged_with_previous:
                for (const Segment& s : segments) {
                    if (s.is_match && !previous_match && !kept.empty()) {
                        kept.back().second = s.end;
                    } else {
                        kept.emplace_back(s.begin, s.end);
                    }
                    previous_match = s.is_match;
                }
                break;
            case SplitBehavior::merged_with_next:
                for (auto s = segments.rbegin(); s != segments.rend(); ++s) {
                    if (s->is_match && !previous_match && !kept.empty()) {
                        kept.back().first = s->begin;
                    } else {
                        kept.emplace_back(s->begin, s->end);
                    }
                    previous_match = s->is_match;
                }
                std::reverse(kept.begin(), kept.end());
                break;
        }
        for (const auto& [begin, end] : kept) {
            if (end > begin)
                out.push_back(
                    {std::string(view.substr(begin, end - begin)), -1, at_start && begin == 0});
        }
    }

    /// The ids of one pre-tokenized word (raw bytes; each byte is one byte-level character).
    /// With ByteLevel each byte of `word` is one byte-level character; without it the word
    /// is text and each character is one symbol.
    [[nodiscard]] std::vector<std::int32_t> merge_word(std::string_view word) const {
        if (ignore_merges_) {
            std::string mapped;
            if (byte_level_) {
                for (const char c : word) mapped += byte_chars_[static_cast<unsigned char>(c)];
            } else {
                mapped = word;
            }
            if (const auto it = vocab_.find(mapped); it != vocab_.end()) return {it->second};
        }
        // The initial symbols: one per byte-level character or per character (HF
        // BPE::merge_word).
        std::vector<std::int32_t> symbols;
        symbols.reserve(word.size());
        std::optional<std::int32_t> unk;  // an unknown-token symbol not yet added
        const bool plain = byte_level_ && !continuing_subword_prefix_ && !end_of_word_suffix_;
        for (std::size_t k = 0; k < word.size();) {
            const std::size_t length = byte_level_ ? 1 : unicode::decode_utf8_at(word, k).length;
            const std::string_view unit = word.substr(k, length);
            const bool last = k + length == word.size();
            std::string s;
            std::int32_t id = -1;
            if (plain) {
                id = byte_ids_[static_cast<unsigned char>(unit[0])];
            } else {
                if (k > 0 && continuing_subword_prefix_) s = *continuing_subword_prefix_;
                if (byte_level_)
                    s += byte_chars_[static_cast<unsigned char>(unit[0])];
                else
                    s += unit;
                if (last && end_of_word_suffix_) s += *end_of_word_suffix_;
                if (const auto it = vocab_.find(s); it != vocab_.end()) id = it->second;
            }
            k += length;
            if (id >= 0) {
                if (unk) symbols.push_back(*unk);
                unk.reset();
                symbols.push_back(id);
                continue;
            }
            // HF's byte fallback takes the bytes of the string it looked up, prefix and
            // suffix included, and leaves a pending unknown token pending.
            if (plain) s = byte_chars_[static_cast<unsigned char>(unit[0])];
            if (byte_fallback_ && add_byte_fallback(s, symbols)) continue;
            if (unk_token_) {
                const auto it = vocab_.find(*unk_token_);
                if (it == vocab_.end()) {
                    fail(source_, ": unk_token \"", *unk_token_, "\" is not in the vocabulary");
                }
                if (unk && !fuse_unk_) symbols.push_back(*unk);
                if (!unk || !fuse_unk_) unk = it->second;
            }
        }
        if (unk) symbols.push_back(*unk);
        merge_all(symbols);
        return symbols;
    }

    /// HF's byte_fallback: the <0xXX> token of each byte of `s`, if all exist.
    bool add_byte_fallback(std::string_view s, std::vector<std::int32_t>& symbols) const {
        std::vector<std::int32_t> ids;
        for (const char c : s) {
            static constexpr char hex[] = "0123456789ABCDEF";
            const auto b = static_cast<unsigned char>(c);
            const std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
            const auto it = vocab_.find(name);
            if (it == vocab_.end()) return false;
            ids.push_back(it->second);
        }
        symbols.insert(symbols.end(), ids.begin(), ids.end());
        return true;
    }

    /// Applies the merges to `symbols` in place: the pair of lowest rank first, the
    /// leftmost of equal ranks first, as HF's Word::merge_all (a heap of candidate merges,
    /// each checked when it comes up), so O(n log n) in the word's length.
    void merge_all(std::vector<std::int32_t>& symbols) const {
        const std::size_t n = symbols.size();
        if (n < 2) return;
        struct Candidate {
            std::uint32_t rank;
            std::size_t pos;
            std::int32_t new_id;
        };
        const auto comes_later = [](const Candidate& x, const Candidate& y) {
            return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
        };
        std::priority_queue<Candidate, std::vector<Candidate>, decltype(comes_later)> queue(
            comes_later);
        constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
        std::vector<std::size_t> prev(n), next(n);
        std::vector<bool> alive(n, true);
        for (std::size_t i = 0; i < n; ++i) {
            prev[i] = i == 0 ? none : i - 1;
            next[i] = i + 1 == n ? none : i + 1;
            if (i + 1 < n) {
                if (const MergeResult* m = find_merge(symbols[i], symbols[i + 1])) {
                    queue.push({m->rank, i, m->new_id});
                }
            }
        }
        while (!queue.empty()) {
            const Candidate top = queue.top();
            queue.pop();
            if (!alive[top.pos] || next[top.pos] == none) continue;
            const std::size_t right = next[top.pos];
            const MergeResult* m = find_merge(symbols[top.pos], symbols[right]);
            if (m == nullptr || m->new_id != top.new_id) continue;  // stale candidate
            symbols[top.pos] = top.new_id;
            alive[right] = false;
            next[top.pos] = next[right];
            if (next[right] != none) prev[next[right]] = top.pos;
            if (prev[top.pos] != none) {
                if (const MergeResult* left = find_merge(symbols[prev[top.pos]], top.new_id)) {
                    queue.push({left->rank, prev[top.pos], left->new_id});
                }
            }
            if (next[top.pos] != none) {
                if (const MergeResult* after = find_merge(top.new_id, symbols[next[top.pos]])) {
                    queue.push({after->rank, top.pos, after->new_id});
                }
            }
        }
        std::size_t kept = 0;
        for (std::size_t i = 0; i < n; ++i) {
            if (alive[i]) symbols[kept++] = symbols[i];
        }
        symbols.resize(kept);
    }

    // ---- normalization and decoding ------------------------------------------------------

    /// Every occurrence of `from` in `s` (left to right, not overlapping) replaced by `to`.
    static void replace_all(std::string& s, std::string_view from, std::string_view to) {
        std::string out;
        std::size_t prev = 0;
        for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, prev)) {
            out.append(s, prev, at - prev);
            out += to;
            prev = at + from.size();
        }
        if (prev == 0) return;
        out.append(s, prev, std::string::npos);
        s = std::move(out);
    }

    /// The normalizer steps in order (HF: NFC; Prepend to a non-empty string; Replace).
    [[nodiscard]] std::string normalize(std::string text) const {
        for (const NormalizerStep& n : normalizer_) {
            switch (n.kind) {
                case NormalizerStep::Kind::nfc:
                    text = unicode::nfc(text);
                    break;
                case NormalizerStep::Kind::prepend:
                    if (!text.empty()) text.insert(0, n.text);
                    break;
                case NormalizerStep::Kind::replace:
                    replace_all(text, n.text, n.content);
                    break;
            }
        }
        return text;
    }

    /// The byte of a byte-fallback token "<0xXX>", if `t` is one.
    static std::optional<char> byte_token(std::string_view t) {
        if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return std::nullopt;
        const auto hex = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;  // HF parses either case
            return -1;
        };
        const int hi = hex(t[3]), lo = hex(t[4]);
        if (hi < 0 || lo < 0) return std::nullopt;
        return static_cast<char>(hi * 16 + lo);
    }

    /// `decode`, or with `continuation` the bytes `ids` add after earlier tokens.
    [[nodiscard]] std::string decode_tokens(std::span<const std::int32_t> ids, bool skip_special,
                                            bool continuation) const {
        std::vector<std::string> tokens;
        tokens.reserve(ids.size());
        for (std::size_t i = 0; i < ids.size(); ++i) {
            const std::string* token = token_of(ids[i]);
            if (token == nullptr) {
                fail(source_, ": token id ", ids[i], " at position ", i,
                     " is not in the vocabulary (", vocab_size_, " ids)");
            }
            if (skip_special && is_special(ids[i])) continue;
            tokens.push_back(*token);
        }
        std::string out;
        if (byte_level_) {  // ByteLevel decoding, whatever the file says
            for (const auto& t : tokens) append_token_bytes(t, out);
            return out;
        }
        if (!has_decoder_) {  // HF joins the tokens with spaces
            for (std::size_t i = 0; i < tokens.size(); ++i)
                out += (i > 0 || continuation ? " " : "") + tokens[i];
            return out;
        }
        bool fused = false;  // the tokens were joined into one text
        using Kind = DecoderStep::Kind;
        for (const DecoderStep& d : decoder_) {
            switch (d.kind) {
                case Kind::byte_level: {
                    std::string joined;
                    for (const auto& t : tokens) append_token_bytes(t, joined);
                    tokens.assign(1, std::move(joined));
                    fused = true;
                    break;
                }
                case Kind::fuse: {
                    std::string joined;
                    for (const auto& t : tokens) joined += t;
                    tokens.assign(1, std::move(joined));
                    fused = true;
                    break;
                }
                case Kind::replace:
                    for (auto& t : tokens) replace_all(t, d.text, d.content);
                    break;
                case Kind::byte_fallback:
                    for (auto& t : tokens)
                        if (const auto b = byte_token(t)) t.assign(1, *b);
                    break;
                case Kind::strip:
                    // After a Fuse the one token is the whole text: a continuation is
                    // neither its start nor (yet) its end.
                    if (fused && continuation) break;
                    for (auto& t : tokens) strip(t, d);
                    break;
                case Kind::metaspace:
                    for (std::size_t i = 0; i < tokens.size(); ++i)
                        replace_all(tokens[i], d.text,
                                    i == 0 && !continuation && d.strip_first ? "" : " ");
                    break;
            }
        }
        for (const auto& t : tokens) out += t;
        return out;
    }

    /// HF's Strip decoder on one token: up to `start` leading and `stop` trailing copies of
    /// the character removed.
    static void strip(std::string& t, const DecoderStep& d) {
        const std::size_t w = d.text.size();
        std::size_t begin = 0, end = t.size();
        for (std::size_t n = 0; n < d.start && end - begin >= w && t.compare(begin, w, d.text) == 0;
             ++n)
            begin += w;
        for (std::size_t n = 0;
             n < d.stop && end - begin >= w && t.compare(end - w, w, d.text) == 0; ++n)
            end -= w;
        t = t.substr(begin, end - begin);
    }

    // ---- decoding --------------------------------------------------------------------------

    [[nodiscard]] const std::string* token_of(std::int32_t id) const {
        if (const auto it = added_by_id_.find(id); it != added_by_id_.end()) {
            return &added_[it->second].content;
        }
        if (const auto it = vocab_r_.find(id); it != vocab_r_.end()) return &it->second;
        return nullptr;
    }

    /// HF's ByteLevel decoder: each character of the token back to its byte; a token with
    /// a character outside the byte map (an added token, say) is taken as it is.
    void append_token_bytes(const std::string& token, std::string& out) const {
        const std::size_t mark = out.size();
        for (std::size_t pos = 0; pos < token.size();) {
            const auto d = unicode::decode_utf8_at(token, pos);
            if (!d.valid || d.code_point >= char_bytes_.size() || char_bytes_[d.code_point] < 0) {
                out.resize(mark);
                out += token;
                return;
            }
            out.push_back(static_cast<char>(static_cast<unsigned char>(char_bytes_[d.code_point])));
            pos += d.length;
        }
    }

    std::string source_;
    std::unordered_map<std::string, std::int32_t> vocab_;
    std::unordered_map<std::int32_t, std::string> vocab_r_;
    std::unordered_map<std::uint64_t, MergeResult> merges_;  // (left id, right id) -> merge
    std::array<std::string, 256> byte_chars_;                // byte -> its character (UTF-8)
    std::array<std::int32_t, 256> byte_ids_{};               // byte -> id of that character, or -1
    std::array<std::int16_t, 0x144> char_bytes_{};           // character -> byte, or -1
    std::optional<std::string> unk_token_, continuing_subword_prefix_, end_of_word_suffix_;
    bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
    std::vector<NormalizerStep> normalizer_;
    bool byte_level_ = true;  // the pre-tokenizer ends in ByteLevel
    std::vector<DecoderStep> decoder_;
    bool has_decoder_ = false;  // the file names a decoder
    std::vector<PreTokenizerStep> pre_tokenizer_;
    std::vector<AddedToken> added_;
    std::unordered_map<std::string, std::size_t> added_by_content_;
    std::unordered_map<std::int32_t, std::size_t> added_by_id_;
    MatchSet raw_matches_, normalized_matches_;
    std::int32_t vocab_size_ = 0;
};

}  // namespace ssm
