#!/usr/bin/env python3
"""Writes include/ssm/text/unicode_tables.hpp: the Unicode data the tokenizers need.

    python3 scripts/gen_unicode_tables.py                # writes the header in place
    python3 scripts/gen_unicode_tables.py --check        # exits 1 when the header is stale

Needs (pip): unicodedata2==16.0.0 unicode-age==18.0.0.0

What is generated, and why these Unicode versions:

* Character classes for the GPT-2 pre-tokenization regex, which HuggingFace `tokenizers`
  runs through Oniguruma (onig crate): `\\p{L}` (general category L*), `\\p{N}` (N*) and
  `\\s`. The wheel of `tokenizers` 0.23 ships Oniguruma with Unicode 16.0 data: every code
  point was checked through the pre-tokenizer and agrees with Unicode 16.0 categories,
  while Python 3.11's own `unicodedata` (Unicode 14.0) does not (9,392 code points that
  Unicode 15/16 assigned). Hence `unicodedata2` 16.0.0, the same module with newer data.
  Oniguruma's `\\s` is the White_Space property: U+0009..U+000D, U+0085 and the Zs, Zl,
  Zp categories (`unicodedata` has no White_Space query; this union is White_Space in
  every Unicode version since 6.3).
* Word characters (`\\w` of Rust's `regex`, Unicode 16.0), which `tokenizers` uses for the
  `single_word` flag of added tokens: Alphabetic, marks (M*), decimal digits (Nd),
  connector punctuation (Pc) and Join_Control (U+200C, U+200D). Alphabetic is L*, Nl and
  Other_Alphabetic; the Other_Alphabetic code points that are not marks are the circled
  and squared Latin letters listed below (`unicodedata` has no Alphabetic query).
* NFC data: canonical decompositions, primary composites and canonical combining
  classes. `tokenizers` normalizes with the crate unicode-normalization-alignments, whose
  tables are Unicode 9.0: combining marks assigned later have combining class 0 there
  and later decompositions are absent. To give the same bytes, the NFC tables keep only
  code points assigned in Unicode 9.0 or earlier (ages from `unicode-age`); decomposition
  and combining class values of assigned code points never change, so the 16.0 data
  restricted this way is the 9.0 data.
"""
import argparse
import pathlib
import sys

try:
    import unicodedata2 as unicodedata
except ImportError:  # pragma: no cover - the stdlib module has older data
    sys.exit("gen_unicode_tables.py needs `pip install unicodedata2==16.0.0 unicode-age`")
import unicode_age

CLASS_UNICODE_VERSION = "16.0.0"
NFC_MAX_AGE = (9, 0)
OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "include/ssm/text/unicode_tables.hpp"

# Other_Alphabetic code points outside the mark categories (PropList.txt, Unicode 16.0).
OTHER_ALPHABETIC_NOT_MARKS = [(0x24B6, 0x24E9), (0x1F130, 0x1F149), (0x1F150, 0x1F169),
                              (0x1F170, 0x1F189)]
JOIN_CONTROL = [(0x200C, 0x200D)]
WHITE_SPACE_CONTROLS = [(0x0009, 0x000D), (0x0085, 0x0085)]

SURROGATES = range(0xD800, 0xE000)


def scalar_values():
    return (cp for cp in range(0x110000) if cp not in SURROGATES)


def to_ranges(code_points):
    ranges = []
    for cp in sorted(code_points):
        if ranges and ranges[-1][1] + 1 == cp:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return [tuple(r) for r in ranges]


def expand(ranges):
    return {cp for first, last in ranges for cp in range(first, last + 1)}


def age_spans():
    """Sorted (first, last, (major, minor)) spans of assigned code points."""
    return sorted((s, e, (ma, mi)) for s, e, ma, mi in unicode_age.unicode_age_db.iter_spans())


def assigned_by(max_age):
    out = set()
    for first, last, age in age_spans():
        if age <= max_age:
            out.update(range(first, last + 1))
    return out


def category_set(prefixes):
    return {cp for cp in scalar_values() if unicodedata.category(chr(cp))[0] in prefixes}


def nfc_data():
    old = assigned_by(NFC_MAX_AGE)
    decompositions = []  # (code point, first, second or 0)
    for cp in sorted(old):
        fields = unicodedata.decomposition(chr(cp)).split()
        if not fields or fields[0].startswith("<"):
            continue  # none, or a compatibility mapping
        parts = [int(f, 16) for f in fields]
        assert len(parts) in (1, 2), hex(cp)
        assert all(p in old for p in parts), hex(cp)
        decompositions.append((cp, parts[0], parts[1] if len(parts) == 2 else 0))
    compositions = []  # (first, second, composite): primary composites only
    for cp, first, second in decompositions:
        if second and unicodedata.normalize("NFC", chr(first) + chr(second)) == chr(cp):
            compositions.append((first, second, cp))
    compositions.sort()
    classes = []  # (first, last, class) runs of equal nonzero class
    for cp in sorted(old):
        ccc = unicodedata.combining(chr(cp))
        if not ccc:
            continue
        if classes and classes[-1][1] + 1 == cp and classes[-1][2] == ccc:
            classes[-1][1] = cp
        else:
            classes.append([cp, cp, ccc])
    return decompositions, compositions, [tuple(c) for c in classes]


def format_rows(rows, width=100):
    """Rows packed into indented lines of at most `width` characters."""
    lines, line = [], ""
    for row in rows:
        candidate = f"{line} {row}" if line else f"    {row}"
        if len(candidate) > width and line:
            lines.append(line)
            candidate = f"    {row}"
        line = candidate
    if line:
        lines.append(line)
    return "\n".join(lines)


def range_table(name, doc, ranges):
    rows = [f"{{0x{a:04X}, 0x{b:04X}}}," for a, b in ranges]
    return (f"/// {doc}\ninline constexpr CodePointRange {name}[] = {{\n"
            f"{format_rows(rows)}\n}};\n")


def render():
    if unicodedata.unidata_version != CLASS_UNICODE_VERSION:
        sys.exit(f"need unicodedata2 {CLASS_UNICODE_VERSION}, have {unicodedata.unidata_version}")
    letters = category_set("L")
    numbers = category_set("N")
    white_space = expand(WHITE_SPACE_CONTROLS) | {
        cp for cp in scalar_values() if unicodedata.category(chr(cp)) in ("Zs", "Zl", "Zp")}
    nl = {cp for cp in scalar_values() if unicodedata.category(chr(cp)) == "Nl"}
    word = (letters | nl | expand(OTHER_ALPHABETIC_NOT_MARKS) | category_set("M")
            | {cp for cp in scalar_values() if unicodedata.category(chr(cp)) in ("Nd", "Pc")}
            | expand(JOIN_CONTROL))
    decompositions, compositions, classes = nfc_data()

    out = []
    out.append(f"""\
// ssm/text/unicode_tables.hpp — GENERATED by `python3 scripts/gen_unicode_tables.py`
// from unicodedata2 {unicodedata.unidata_version} and unicode-age {".".join(map(str, unicode_age.unicode_age_db.UCD_VERSION))}.
// Do not edit by hand; the script explains every choice.
//
// Character classes: Unicode {CLASS_UNICODE_VERSION} (what the Oniguruma inside HuggingFace
// `tokenizers` uses for \\p{{L}}, \\p{{N}} and \\s). NFC data: code points assigned by Unicode
// {NFC_MAX_AGE[0]}.{NFC_MAX_AGE[1]} only (what `tokenizers`' NFC normalizer knows).
#pragma once

#include <cstdint>

namespace ssm::unicode::tables {{

inline constexpr const char* class_unicode_version = "{CLASS_UNICODE_VERSION}";
inline constexpr const char* nfc_unicode_version = "{NFC_MAX_AGE[0]}.{NFC_MAX_AGE[1]}.0";

/// Code points first..last, both included.
struct CodePointRange {{
    char32_t first;
    char32_t last;
}};

/// `code_point` decomposes canonically to `first` (+ `second`, 0 for a singleton).
struct Decomposition {{
    char32_t code_point;
    char32_t first;
    char32_t second;
}};

/// `first` + `second` compose to `composite` (a primary composite).
struct Composition {{
    char32_t first;
    char32_t second;
    char32_t composite;
}};

/// Code points first..last have canonical combining class `combining_class` (never 0).
struct CombiningClassRange {{
    char32_t first;
    char32_t last;
    std::uint8_t combining_class;
}};
""")
    out.append(range_table("letter_ranges", "\\p{L}: general category L*.", to_ranges(letters)))
    out.append(range_table("number_ranges", "\\p{N}: general category N*.", to_ranges(numbers)))
    out.append(range_table("white_space_ranges", "\\s: the White_Space property.",
                           to_ranges(white_space)))
    out.append(range_table("word_ranges",
                           "\\w (Rust regex): Alphabetic, M*, Nd, Pc, Join_Control.",
                           to_ranges(word)))
    rows = [f"{{0x{c:04X}, 0x{a:04X}, 0x{b:04X}}}," for c, a, b in decompositions]
    out.append("/// Canonical decompositions (one level), sorted by code point; Hangul syllables\n"
               "/// are algorithmic and not listed.\n"
               f"inline constexpr Decomposition decompositions[] = {{\n{format_rows(rows)}\n}};\n")
    rows = [f"{{0x{a:04X}, 0x{b:04X}, 0x{c:04X}}}," for a, b, c in compositions]
    out.append("/// Primary composites, sorted by (first, second); Hangul is algorithmic.\n"
               f"inline constexpr Composition compositions[] = {{\n{format_rows(rows)}\n}};\n")
    rows = [f"{{0x{a:04X}, 0x{b:04X}, {c}}}," for a, b, c in classes]
    out.append("/// Nonzero canonical combining classes, sorted by code point.\n"
               "inline constexpr CombiningClassRange combining_classes[] = {\n"
               f"{format_rows(rows)}\n}};\n")
    out.append("}  // namespace ssm::unicode::tables\n")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT)
    args = parser.parse_args()
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            sys.exit(f"{args.output} is stale: rerun scripts/gen_unicode_tables.py")
        print(f"{args.output} is up to date")
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
