// ssm/io/torch_file.hpp — read the tensors of a PyTorch checkpoint (`pytorch_model.bin`,
// `.pt`, `.pth`: what `torch.save(state_dict)` writes) without Python and without running
// any of the pickled code.
//
// Format: a ZIP archive of stored entries `<archive>/data.pkl` (the pickled object, protocol
// 2 by default), `<archive>/data/<key>` (the raw little-endian bytes of each storage) and a
// few small records (`version`, `byteorder`). In the pickle, each tensor is a call of
// `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)` whose
// storage is a persistent id `('storage', torch.<Type>Storage, key, location, numel)`.
//
// The unpickler here is a data reader, not Python: it knows the opcodes of protocols 2–5,
// builds tensors, dicts, lists, tuples and scalars, and keeps every other object as an
// inert placeholder (never called). Tensors are then read in place from the mapped file:
// zero-copy for contiguous aligned float32, a converted (and, for strided views, gathered)
// copy otherwise.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ssm/core/checked.hpp"
#include "ssm/core/dtype.hpp"
#include "ssm/core/error.hpp"
#include "ssm/core/tensor.hpp"
#include "ssm/io/safetensors.hpp"
#include "ssm/io/zip.hpp"

namespace ssm {

namespace detail::pickle {

/// A storage as the pickle refers to it: element type, record key, element count.
struct StorageRef {
    DType dtype = DType::F32;
    std::string key;
    std::uint64_t numel = 0;
};

/// A strided view of a storage, as `_rebuild_tensor_v2` describes it.
struct TensorRef {
    StorageRef storage;
    std::int64_t offset = 0;
    std::vector<std::int64_t> size, stride;
};

struct Value;
using Ref = std::shared_ptr<Value>;

/// One unpickled value. `Global` holds a `module.name` it was never resolved to;
/// `Object` is whatever calling or instantiating an unknown global would have made.
struct Value {
    enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Object, Storage, Tensor };
    Kind kind = Kind::None;
    std::int64_t i = 0;
    double f = 0;
    std::string s;  // Str, Bytes, and the name of a Global or Object
    std::vector<Ref> items;                   // Tuple, List
    std::vector<std::pair<Ref, Ref>> entries;  // Dict, in insertion order
    StorageRef storage;
    TensorRef tensor;

    Value() = default;
    explicit Value(Kind k) : kind(k) {}
    Value(const Value&) = delete;
    Value& operator=(const Value&) = delete;
    // Deeply nested containers are released without recursion, so a hostile pickle
    // cannot exhaust the stack on the way out.
    ~Value() {
        std::vector<Ref> pending;
        take_children(pending);
        while (!pending.empty()) {
            Ref r = std::move(pending.back());
            pending.pop_back();
            if (r && r.use_count() == 1) r->take_children(pending);
        }
    }

private:
    void take_children(std::vector<Ref>& out) {
        for (auto& r : items) out.push_back(std::move(r));
        for (auto& [k, v] : entries) {
            out.push_back(std::move(k));
            out.push_back(std::move(v));
        }
        items.clear();
        entries.clear();
    }
};

/// The storage type names `torch.save` pickles, and their element types.
[[nodiscard]] inline const DType* storage_dtype(std::string_view global) {
    static const std::pair<std::string_view, DType> table[] = {
        {"torch.FloatStorage", DType::F32},  {"torch.DoubleStorage", DType::F64}, {"torch.HalfStorage", DType::F16},
        {"torch.BFloat16Storage", DType::BF16}, {"torch.LongStorage", DType::I64}, {"torch.IntStorage", DType::I32},
        {"torch.ShortStorage", DType::I16},  {"torch.CharStorage", DType::I8},    {"torch.ByteStorage", DType::U8},
        {"torch.BoolStorage", DType::Bool}};
    for (const auto& [name, dtype] : table)
        if (name == global) return &dtype;
    return nullptr;
}

/// Reads one pickle. `load_storage` turns a persistent id into a Storage value.
/// The values `run()` returns are valid while the Unpickler lives: on destruction it
/// empties every list and dict it made, so reference cycles a pickle can build (a list
/// appended to itself) are released too.
class Unpickler {
public:
    using StorageLoader = std::function<Ref(const Value& pid)>;

    Unpickler(std::span<const std::byte> bytes, std::string where, StorageLoader load_storage)
        : bytes_(bytes), where_(std::move(where)), load_storage_(std::move(load_storage)) {}
    Unpickler(const Unpickler&) = delete;
    Unpickler& operator=(const Unpickler&) = delete;
    ~Unpickler() {
        stack_.clear();
        memo_.clear();
        for (auto& c : mutables_) {
            std::vector<Ref> items = std::move(c->items);
            std::vector<std::pair<Ref, Ref>> entries = std::move(c->entries);
            c->items.clear();
            c->entries.clear();
        }
    }

    [[nodiscard]] Ref run() {
        for (;;) {
            const std::size_t op_at = pos_;
            const auto op = u8();
            switch (op) {
                case 0x80: (void)u8(); break;      // PROTO
                case 0x95: (void)take(8); break;   // FRAME: a length hint only
                case '.':                          // STOP
                    if (stack_.size() != 1 || !marks_.empty()) bad(op_at, "STOP with ", stack_.size(), " values on the stack");
                    return stack_.back();
                case '(': marks_.push_back(stack_.size()); break;  // MARK
                case 'N': push(make(Value::Kind::None)); break;
                case 0x88: push(make_bool(true)); break;
                case 0x89: push(make_bool(false)); break;
                case 'K': push(make_int(u8())); break;                          // BININT1
                case 'M': push(make_int(static_cast<std::int64_t>(le(2)))); break;  // BININT2
                case 'J': push(make_int(static_cast<std::int32_t>(le(4)))); break;  // BININT
                case 0x8a: push(make_int(long_int(u8(), op_at))); break;          // LONG1
                case 0x8b: push(make_int(long_int(le(4), op_at))); break;         // LONG4
                case 'G': {                                                       // BINFLOAT, big-endian
                    std::uint64_t b = 0;
                    for (auto c : take(8)) b = (b << 8) | static_cast<std::uint8_t>(c);
                    auto v = make(Value::Kind::Float);
                    std::memcpy(&v->f, &b, 8);
                    push(std::move(v));
                    break;
                }
                case 'X': push(make_text(Value::Kind::Str, le(4))); break;     // BINUNICODE
                case 0x8c: push(make_text(Value::Kind::Str, u8())); break;     // SHORT_BINUNICODE
                case 0x8d: push(make_text(Value::Kind::Str, le(8))); break;    // BINUNICODE8
                case 'T': push(make_text(Value::Kind::Bytes, le(4))); break;   // BINSTRING
                case 'U': push(make_text(Value::Kind::Bytes, u8())); break;    // SHORT_BINSTRING
                case 'B': push(make_text(Value::Kind::Bytes, le(4))); break;   // BINBYTES
                case 'C': push(make_text(Value::Kind::Bytes, u8())); break;    // SHORT_BINBYTES
                case 0x8e: push(make_text(Value::Kind::Bytes, le(8))); break;  // BINBYTES8
                case 0x96: push(make_text(Value::Kind::Bytes, le(8))); break;  // BYTEARRAY8
                case '}': push(make_mutable(Value::Kind::Dict)); break;
                case ']': push(make_mutable(Value::Kind::List)); break;
                case ')': push(make(Value::Kind::Tuple)); break;
                case 't': push(tuple_of(pop_mark(op_at))); break;
                case 0x85: push(tuple_of(pop_n(1, op_at))); break;
                case 0x86: push(tuple_of(pop_n(2, op_at))); break;
                case 0x87: push(tuple_of(pop_n(3, op_at))); break;
                case 'q': memo_put(u8(), op_at); break;           // BINPUT
                case 'r': memo_put(le(4), op_at); break;          // LONG_BINPUT
                case 0x94: memo_put(memo_.size(), op_at); break;  // MEMOIZE
                case 'h': push(memo_get(u8(), op_at)); break;               // BINGET
                case 'j': push(memo_get(le(4), op_at)); break;              // LONG_BINGET
                case 'c': {                                                 // GLOBAL "module\nname\n"
                    std::string module = line(op_at), name = line(op_at);
                    push(make_global(module + "." + name));
                    break;
                }
                case 0x93: {  // STACK_GLOBAL
                    Ref name = pop(op_at), module = pop(op_at);
                    if (module->kind != Value::Kind::Str || name->kind != Value::Kind::Str)
                        bad(op_at, "STACK_GLOBAL needs two strings");
                    push(make_global(module->s + "." + name->s));
                    break;
                }
                case 'Q': {  // BINPERSID
                    Ref pid = pop(op_at);
                    push(load_storage_(*pid));
                    break;
                }
                case 'R': {  // REDUCE
                    Ref args = pop(op_at), callable = pop(op_at);
                    if (args->kind != Value::Kind::Tuple) bad(op_at, "REDUCE arguments are not a tuple");
                    push(call(*callable, args->items, op_at));
                    break;
                }
                case 0x81: {  // NEWOBJ
                    Ref args = pop(op_at), cls = pop(op_at);
                    push(instantiate(*cls));
                    break;
                }
                case 'b': (void)pop(op_at); (void)top(op_at); break;  // BUILD: object state is not needed
                case 's': {                                          // SETITEM
                    Ref v = pop(op_at), k = pop(op_at);
                    set_items(*top(op_at), {std::move(k), std::move(v)}, op_at);
                    break;
                }
                case 'u': {  // SETITEMS
                    auto kv = pop_mark(op_at);
                    if (kv.size() % 2) bad(op_at, "SETITEMS with an odd number of values");
                    set_items(*top(op_at), kv, op_at);
                    break;
                }
                case 'a': {  // APPEND
                    Ref v = pop(op_at);
                    append(*top(op_at), {std::move(v)}, op_at);
                    break;
                }
                case 'e': {  // APPENDS
                    auto vs = pop_mark(op_at);
                    append(*top(op_at), vs, op_at);
                    break;
                }
                case '0': (void)pop(op_at); break;  // POP
                case '2': push(top(op_at)); break;  // DUP
                case '1': (void)pop_mark(op_at); break;  // POP_MARK
                default: bad(op_at, "opcode 0x", hex(op), " is not read (protocol 2-5 binary opcodes only)");
            }
        }
    }

private:
    template <class... Args>
    [[noreturn]] void bad(std::size_t at, const Args&... what) const {
        fail(where_, ": pickle byte ", at, ": ", what...);
    }
    static std::string hex(std::uint8_t b) {
        const char* d = "0123456789abcdef";
        return {d[b >> 4], d[b & 15]};
    }

    std::span<const std::byte> take(std::uint64_t n) {
        if (n > bytes_.size() - pos_) fail(where_, ": pickle ends early (needs ", n, " bytes at byte ", pos_, ")");
        auto s = bytes_.subspan(pos_, static_cast<std::size_t>(n));
        pos_ += static_cast<std::size_t>(n);
        return s;
    }
    std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
    std::uint64_t le(int n) { return load_le(take(static_cast<std::uint64_t>(n)), 0, n); }
    std::int64_t long_int(std::uint64_t n, std::size_t at) {
        if (n > 8) bad(at, "integer of ", n, " bytes is too large");
        if (n == 0) return 0;
        std::uint64_t v = le(static_cast<int>(n));
        if (n < 8 && (v >> (8 * n - 1)) & 1u) v |= ~std::uint64_t{0} << (8 * n);  // sign-extend
        return static_cast<std::int64_t>(v);
    }
    std::string line(std::size_t at) {
        const auto rest = bytes_.subspan(pos_);
        const auto nl = std::find(rest.begin(), rest.end(), std::byte{'\n'});
        if (nl == rest.end()) bad(at, "GLOBAL name is not terminated");
        std::string s(reinterpret_cast<const char*>(rest.data()), static_cast<std::size_t>(nl - rest.begin()));
        pos_ += s.size() + 1;
        return s;
    }

    // Every value made counts against kMaxValues: a pickle of n bytes could otherwise make
    // n values of a few hundred bytes each.
    Ref make(Value::Kind k) {
        if (++made_ > kMaxValues) fail(where_, ": pickle makes more than ", kMaxValues, " values");
        return std::make_shared<Value>(k);
    }
    Ref make_mutable(Value::Kind k) {
        auto v = make(k);
        mutables_.push_back(v);
        return v;
    }
    Ref make_bool(bool b) {
        auto v = make(Value::Kind::Bool);
        v->i = b;
        return v;
    }
    Ref make_int(std::int64_t i) {
        auto v = make(Value::Kind::Int);
        v->i = i;
        return v;
    }
    Ref make_text(Value::Kind k, std::uint64_t n) {
        auto v = make(k);
        const auto b = take(n);
        v->s.assign(reinterpret_cast<const char*>(b.data()), b.size());
        return v;
    }
    Ref make_global(std::string name) {
        auto v = make(Value::Kind::Global);
        v->s = std::move(name);
        return v;
    }
    Ref tuple_of(std::vector<Ref> items) {
        auto v = make(Value::Kind::Tuple);
        v->items = std::move(items);
        return v;
    }

    void push(Ref v) {
        if (stack_.size() >= kMaxStack) fail(where_, ": pickle stack exceeds ", kMaxStack, " values");
        stack_.push_back(std::move(v));
    }
    [[nodiscard]] std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
    Ref pop(std::size_t at) {
        if (stack_.size() <= floor()) bad(at, "stack underflow");
        Ref v = std::move(stack_.back());
        stack_.pop_back();
        return v;
    }
    Ref top(std::size_t at) const {
        if (stack_.size() <= floor()) bad(at, "stack underflow");
        return stack_.back();
    }
    std::vector<Ref> pop_n(std::size_t n, std::size_t at) {
        if (stack_.size() < floor() + n) bad(at, "stack underflow");
        std::vector<Ref> out(std::make_move_iterator(stack_.end() - static_cast<std::ptrdiff_t>(n)),
                             std::make_move_iterator(stack_.end()));
        stack_.resize(stack_.size() - n);
        return out;
    }
    std::vector<Ref> pop_mark(std::size_t at) {
        if (marks_.empty()) bad(at, "no MARK to pop to");
        const std::size_t k = marks_.back();
        marks_.pop_back();
        std::vector<Ref> out(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(k)),
                             std::make_move_iterator(stack_.end()));
        stack_.resize(k);
        return out;
    }
    void memo_put(std::uint64_t key, std::size_t at) {
        if (memo_.size() >= kMaxMemo && memo_.find(key) == memo_.end())
            bad(at, "the memo exceeds ", kMaxMemo, " entries");
        memo_[key] = top(at);
    }
    Ref memo_get(std::uint64_t key, std::size_t at) const {
        auto it = memo_.find(key);
        if (it == memo_.end()) bad(at, "memo entry ", key, " was never stored");
        return it->second;
    }

    void set_items(Value& target, const std::vector<Ref>& kv, std::size_t at) {
        if (target.kind == Value::Kind::Object) return;  // state of an unread object
        if (target.kind != Value::Kind::Dict) bad(at, "SETITEM(S) on a value that is not a dict");
        for (std::size_t i = 0; i + 1 < kv.size(); i += 2) target.entries.emplace_back(kv[i], kv[i + 1]);
    }
    void append(Value& target, const std::vector<Ref>& vs, std::size_t at) {
        if (target.kind == Value::Kind::Object) return;
        if (target.kind != Value::Kind::List) bad(at, "APPEND(S) on a value that is not a list");
        target.items.insert(target.items.end(), vs.begin(), vs.end());
    }

    Ref instantiate(const Value& cls) {
        if (cls.kind == Value::Kind::Global && (cls.s == "collections.OrderedDict" || cls.s == "builtins.dict"))
            return make_mutable(Value::Kind::Dict);
        auto v = make(Value::Kind::Object);
        v->s = cls.kind == Value::Kind::Global ? cls.s : "?";
        return v;
    }

    // The few callables a state dict is made of; anything else becomes an inert Object.
    // `_rebuild_from_type_v2` calls the function it is given: followed in a loop, at most
    // kMaxRebuildDepth deep (torch.save nests it once), never by recursion.
    Ref call(const Value& f0, const std::vector<Ref>& args0, std::size_t at) {
        const Value* f = &f0;
        const std::vector<Ref>* a = &args0;
        for (std::size_t depth = 0;; ++depth) {
            const std::vector<Ref>& args = *a;
            if (f->kind != Value::Kind::Global) return instantiate(*f);
            const std::string& name = f->s;
            if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor")
                return rebuild_tensor(args, at);
            if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
                if (args.empty() || args[0]->kind != Value::Kind::Tensor) bad(at, name, " without a tensor");
                return args[0];
            }
            if (name != "torch._tensor._rebuild_from_type_v2") return instantiate(*f);
            // (func, type, args, state)
            if (args.size() < 3 || args[2]->kind != Value::Kind::Tuple) bad(at, name, " with malformed arguments");
            if (depth >= kMaxRebuildDepth) bad(at, name, " calls are nested more than ", kMaxRebuildDepth, " deep");
            f = args[0].get();
            a = &args[2]->items;
        }
    }

    Ref rebuild_tensor(const std::vector<Ref>& args, std::size_t at) {
        if (args.size() < 4) bad(at, "_rebuild_tensor needs (storage, offset, size, stride)");
        if (args[0]->kind != Value::Kind::Storage) bad(at, "tensor whose storage is not a saved storage");
        const auto ints = [&](const Value& v, const char* what) {
            if (v.kind != Value::Kind::Tuple) bad(at, "tensor ", what, " is not a tuple");
            std::vector<std::int64_t> out;
            for (const auto& x : v.items) {
                if (x->kind != Value::Kind::Int || x->i < 0) bad(at, "tensor ", what, " holds a non-integer or negative value");
                out.push_back(x->i);
            }
            return out;
        };
        if (args[1]->kind != Value::Kind::Int || args[1]->i < 0) bad(at, "tensor storage offset is not a non-negative integer");
        auto v = make(Value::Kind::Tensor);
        v->tensor.storage = args[0]->storage;
        v->tensor.offset = args[1]->i;
        v->tensor.size = ints(*args[2], "size");
        v->tensor.stride = ints(*args[3], "stride");
        if (v->tensor.size.size() != v->tensor.stride.size()) bad(at, "tensor size and stride differ in rank");
        return v;
    }

    static constexpr std::size_t kMaxStack = 1u << 20;
    static constexpr std::size_t kMaxRebuildDepth = 64;
    static constexpr std::size_t kMaxMemo = 1u << 20;
    static constexpr std::size_t kMaxValues = 1u << 20;
    std::span<const std::byte> bytes_;
    std::string where_;
    StorageLoader load_storage_;
    std::size_t pos_ = 0;
    std::size_t made_ = 0;  // values made so far
    std::vector<Ref> stack_;
    std::vector<std::size_t> marks_;
    std::unordered_map<std::uint64_t, Ref> memo_;
    std::vector<Ref> mutables_;  // every list and dict made, emptied on destruction
};

}  // namespace detail::pickle

/// A validated, memory-mapped PyTorch checkpoint holding a dict of tensors (a state dict,
/// or a dict with the state dict under "state_dict" or "model"). The same reading
/// interface as `SafetensorsFile`; cheap to copy (shares the mapping).
class TorchFile {
public:
    [[nodiscard]] static TorchFile open(const std::filesystem::path& path) {
        TorchFile f;
        f.path_ = path;
        f.map_ = std::make_shared<detail::MappedFile>(path);
        f.parse();
        return f;
    }

    /// True when `bytes` begin like a file `torch.save` wrote (zip or legacy format).
    [[nodiscard]] static bool looks_like_torch(std::span<const std::byte> bytes) noexcept {
        return ZipDirectory::looks_like_zip(bytes) || is_legacy(bytes);
    }

    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
    [[nodiscard]] bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

    /// dtype and shape of a tensor; `begin`/`end` are the file offsets its elements span.
    [[nodiscard]] const TensorInfo& info(std::string_view name) const { return stored(name).info; }

    /// Tensor names, sorted.
    [[nodiscard]] std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& [n, t] : tensors_) out.push_back(n);
        return out;
    }

    /// The tensor as float32: a zero-copy view for contiguous aligned F32 data, otherwise
    /// a converted copy, gathered through the strides for views.
    [[nodiscard]] Tensor load_f32(std::string_view name) const {
        const Stored& t = stored(name);
        const std::byte* base = map_->data() + t.storage_begin;
        const std::size_t es = dtype_size(t.info.dtype);
        if (!has_f32_reading(t.info.dtype))
            fail(path_.string(), ": tensor '", name, "' has dtype ", dtype_name(t.info.dtype),
                 ", which has no float32 reading");
        const std::byte* first = base + static_cast<std::size_t>(t.offset) * es;
        if (t.contiguous) {
            if (t.info.dtype == DType::F32 && reinterpret_cast<std::uintptr_t>(first) % alignof(float) == 0)
                return Tensor::view(reinterpret_cast<const float*>(first), t.info.shape, map_);
            Tensor out = Tensor::zeros(t.info.shape);
            (void)convert_to_f32(t.info.dtype, first, out.mutable_data(), static_cast<std::size_t>(out.size()));
            return out;
        }
        Tensor out = Tensor::zeros(t.info.shape);
        float* dst = out.mutable_data();
        const std::size_t rank = t.info.shape.size();
        std::vector<index> at(rank, 0);
        const auto n = static_cast<std::size_t>(out.size());
        for (std::size_t k = 0; k < n; ++k) {
            std::int64_t e = 0;
            for (std::size_t d = 0; d < rank; ++d) e += at[d] * t.stride[d];
            (void)convert_to_f32(t.info.dtype, first + static_cast<std::size_t>(e) * es, dst + k, 1);
            for (std::size_t d = rank; d-- > 0;) {  // odometer, last dimension fastest
                if (++at[d] < t.info.shape[d]) break;
                at[d] = 0;
            }
        }
        return out;
    }

private:
    // The legacy format opens with PROTO 2 and the pickled magic number 0x1950a86a20f9469cfc6c.
    [[nodiscard]] static bool is_legacy(std::span<const std::byte> bytes) noexcept {
        constexpr unsigned char magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
        return bytes.size() >= sizeof magic && std::memcmp(bytes.data(), magic, sizeof magic) == 0;
    }

    struct Stored {
        TensorInfo info;
        std::size_t storage_begin = 0;  // file offset of the storage's first byte
        std::int64_t offset = 0;        // in elements
        std::vector<std::int64_t> stride;
        bool contiguous = true;
    };

    [[nodiscard]] static bool has_f32_reading(DType t) noexcept {
        float x;
        const std::byte zero[8]{};
        return convert_to_f32(t, zero, &x, 1);
    }

    [[nodiscard]] const Stored& stored(std::string_view name) const {
        auto it = tensors_.find(name);
        if (it == tensors_.end()) fail(path_.string(), ": no tensor '", name, "'");
        return it->second;
    }

    void parse() {
        using detail::pickle::Ref;
        using detail::pickle::Value;
        const std::string file = path_.string();
        const std::span<const std::byte> bytes{map_->data(), map_->size()};
        if (!ZipDirectory::looks_like_zip(bytes)) {
            if (is_legacy(bytes))
                fail(file, ": saved in the legacy torch format (before PyTorch 1.6), which is not read; "
                     "load and re-save it with torch.save, or convert it to safetensors");
            fail(file, ": not a PyTorch checkpoint (no ZIP archive signature)");
        }
        const ZipDirectory zip = ZipDirectory::read(bytes, file);

        // The archive's records share one top folder; data.pkl names it.
        std::string prefix;
        for (const auto& [name, e] : zip.entries()) {
            const auto slash = name.find('/');
            if (slash != std::string::npos && name.compare(slash, std::string::npos, "/data.pkl") == 0) {
                if (!prefix.empty()) fail(file, ": holds more than one data.pkl");
                prefix = name.substr(0, slash + 1);
            }
        }
        if (prefix.empty()) fail(file, ": a ZIP archive without <archive>/data.pkl: not written by torch.save");
        if (const ZipEntry* order = zip.find(prefix + "byteorder")) {
            const auto b = zip.data(*order);
            const std::string_view s(reinterpret_cast<const char*>(b.data()), b.size());
            if (s != "little") fail(file, ": storages are stored '", s, "'-endian; only little-endian is read");
        }

        std::map<std::string, std::size_t> storages;  // key → file offset of its bytes
        auto load_storage = [&](const Value& pid) -> Ref {
            const auto& it = pid.items;
            if (pid.kind != Value::Kind::Tuple || it.size() != 5 || it[0]->kind != Value::Kind::Str ||
                it[0]->s != "storage" || it[1]->kind != Value::Kind::Global || it[2]->kind != Value::Kind::Str ||
                it[4]->kind != Value::Kind::Int || it[4]->i < 0)
                fail(file, ": a persistent id that is not ('storage', type, key, location, numel)");
            const DType* dtype = detail::pickle::storage_dtype(it[1]->s);
            if (!dtype) fail(file, ": storage '", it[2]->s, "' has type ", it[1]->s, ", which is not read");
            const ZipEntry* e = zip.find(prefix + "data/" + it[2]->s);
            if (!e) fail(file, ": storage '", it[2]->s, "' has no record ", prefix, "data/", it[2]->s);
            const auto numel = static_cast<std::uint64_t>(it[4]->i);
            if (numel > e->size / dtype_size(*dtype) || e->size != numel * dtype_size(*dtype))
                fail(file, ": storage '", it[2]->s, "' holds ", e->size, " bytes, but ", numel, " elements of ",
                     dtype_name(*dtype), " need ", numel * dtype_size(*dtype));
            storages[it[2]->s] = static_cast<std::size_t>(e->offset);
            auto v = std::make_shared<Value>(Value::Kind::Storage);
            v->storage = {*dtype, it[2]->s, numel};
            return v;
        };

        const ZipEntry* pkl = zip.find(prefix + "data.pkl");
        detail::pickle::Unpickler unpickler(zip.data(*pkl), file + ": " + prefix + "data.pkl", load_storage);
        const Ref root = unpickler.run();
        const Value* dict = state_dict_of(*root);
        if (!dict) fail(file, ": holds no dict of tensors (nor one under 'state_dict' or 'model')");

        for (const auto& [k, v] : dict->entries) {
            if (v->kind != Value::Kind::Tensor) continue;  // e.g. step counters, config values
            if (k->kind != Value::Kind::Str) fail(file, ": a tensor whose key is not a string");
            add_tensor(k->s, v->tensor, storages.at(v->tensor.storage.key));
        }
        if (tensors_.empty()) fail(file, ": holds a dict without tensors");
    }

    // The dict whose values are tensors: the root, or root["state_dict"] / root["model"].
    static const detail::pickle::Value* state_dict_of(const detail::pickle::Value& root) {
        using detail::pickle::Value;
        if (root.kind != Value::Kind::Dict) return nullptr;
        const auto has_tensors = [](const Value& d) {
            return std::any_of(d.entries.begin(), d.entries.end(),
                               [](const auto& kv) { return kv.second->kind == Value::Kind::Tensor; });
        };
        if (has_tensors(root)) return &root;
        for (const char* key : {"state_dict", "model"})
            for (const auto& [k, v] : root.entries)
                if (k->kind == Value::Kind::Str && k->s == key && v->kind == Value::Kind::Dict && has_tensors(*v))
                    return v.get();
        return nullptr;
    }

    void add_tensor(const std::string& name, const detail::pickle::TensorRef& t, std::size_t storage_begin) {
        const std::string file = path_.string();
        Stored s;
        s.info.name = name;
        s.info.dtype = t.storage.dtype;
        s.offset = t.offset;
        s.stride = t.stride;
        s.storage_begin = storage_begin;
        if (static_cast<std::uint64_t>(t.offset) > t.storage.numel)
            fail(file, ": tensor '", name, "' starts at element ", t.offset, " of storage '", t.storage.key,
                 "', which holds ", t.storage.numel);
        for (auto n : t.size) s.info.shape.push_back(static_cast<index>(n));
        // Every dimension counts, those after a zero too.
        const auto elements = checked_elements(std::span<const std::int64_t>(t.size));
        if (!elements) fail(file, ": tensor '", name, "': shape ", shape_string(s.info.shape), " is too large");
        const std::uint64_t count = *elements;
        // The last element the view reaches must lie inside the storage.
        std::uint64_t last = static_cast<std::uint64_t>(t.offset);
        std::int64_t expected_stride = 1;
        for (std::size_t d = t.size.size(); d-- > 0;) {
            const auto n = static_cast<std::uint64_t>(t.size[d]);
            const auto st = static_cast<std::uint64_t>(t.stride[d]);
            if (n > 1) {
                if (st != 0 && (n - 1) > ((std::uint64_t{1} << 62) - last) / st)
                    fail(file, ": tensor '", name, "': strides reach too far");
                last += (n - 1) * st;
                if (t.stride[d] != expected_stride) s.contiguous = false;
            }
            expected_stride *= t.size[d];
        }
        const std::size_t es = dtype_size(t.storage.dtype);
        if (count > 0 && last >= t.storage.numel)
            fail(file, ": tensor '", name, "' (shape ", shape_string(s.info.shape), ", offset ", t.offset,
                 ") reaches element ", last, " of storage '", t.storage.key, "', which holds ", t.storage.numel);
        // A view may repeat elements (zero strides); reading it allocates one float per
        // element, which the file must back with at least one byte each.
        if (!s.contiguous && count > map_->size())
            fail(file, ": tensor '", name, "' is a view of shape ", shape_string(s.info.shape), " holding ", count,
                 " elements, more than the file's ", map_->size(), " bytes can back");
        s.info.begin = storage_begin + static_cast<std::size_t>(t.offset) * es;
        s.info.end = count == 0 ? s.info.begin : storage_begin + static_cast<std::size_t>(last + 1) * es;
        if (!tensors_.emplace(name, std::move(s)).second) fail(file, ": tensor '", name, "' appears twice");
    }

    std::filesystem::path path_;
    std::shared_ptr<detail::MappedFile> map_;
    std::map<std::string, Stored, std::less<>> tensors_;
};

}  // namespace ssm
