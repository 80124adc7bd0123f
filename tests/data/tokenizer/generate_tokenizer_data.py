#!/usr/bin/env python3
"""Makes the tokenizer test data in this folder from HuggingFace `tokenizers`.

    python3 -m venv /tmp/tokenv && /tmp/tokenv/bin/pip install tokenizers==0.23.3
    /tmp/tokenv/bin/python tests/data/tokenizer/generate_tokenizer_data.py

Writes, next to this script:

* tokenizer.json — a byte-level BPE trained here on text the script writes itself (no
  downloads): NFC normalizer, ByteLevel pre-tokenizer (add_prefix_space false, the GPT-2
  regex), ByteLevel decoder, special tokens <|endoftext|> (id 0) and <|padding|> (id 1),
  exactly 1000 ids, so that it also serves the bundled test model of vocab 1000. This is
  the layout of GPT-NeoX-20B's tokenizer.json (state-spaces/mamba-*-hf).
* cases.jsonl — one JSON object per line: {"text": ..., "ids": [...]} with the ids of
  `Tokenizer.encode(text, add_special_tokens=False)`, and "decoded" where
  `Tokenizer.decode(ids)` differs from the text (NFC changed it).
* tokenizer_split.json — a smaller BPE (400 ids) in the form newer files use: normalizer
  Sequence[NFC], pre_tokenizer Sequence[Split(GPT-2 regex, Isolated), ByteLevel(
  add_prefix_space true, use_regex false)], merges written as "a b" strings, and added
  tokens with every flag (lstrip/rstrip, single_word, normalized or not, special or not).
* cases_split.jsonl — its cases, as above.
* variants.json — small tokenizers for the options the two above leave unused, each with
  its cases: ByteLevel with add_prefix_space and the regex, ignore_merges, unk_token with
  and without fuse_unk, byte_fallback, continuing_subword_prefix + end_of_word_suffix,
  literal Split patterns with every behaviour. A list of {"name", "cases", and either
  "tokenizer" (the whole file) or "patch" (changes to tokenizer.json: each top-level key
  replaced, except "model", whose keys are replaced one by one)}.

* tokenizer_llama.json — a character-level BPE of the LLaMA kind (what SAMBA and LLaMA-2
  use), trained here: 600 ids — <unk> 0, <s> 1, </s> 2 (special, not normalized), the 256
  byte tokens <0x00>..<0xFF> as 3..258, then the merges' tokens — with byte_fallback and
  fuse_unk; normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer, decoder
  Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)] (the "legacy" LLaMA-2
  file). Its alphabet is limited, so the rarer characters go through byte fallback.
* cases_llama.jsonl — its cases: the texts of cases.jsonl plus a few with <s> and </s>.
* variants_llama.json — the same model with the newer Metaspace forms (prepend_scheme
  first / always / never, split or not, Metaspace decoder) and with no decoder, each with
  its cases, in the form of variants.json (a "patch" of tokenizer_llama.json).

Everything is seeded; a rerun with the same `tokenizers` version writes the same bytes.
"""
import json
import pathlib
import random
import unicodedata

import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, trainers)

HERE = pathlib.Path(__file__).resolve().parent
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# ---- text to train on and to test with -----------------------------------------------------

NOUNS = """time year people way day man thing woman life child world school state family
student group country problem hand part place case week company system program question work
government number night point home water room mother area money story fact month lot right
study book eye job word business issue side kind head house service friend father power hour
game line end member law car city community name president team minute idea kid body
information back parent face others level office door health person art war history party
result change morning reason research girl guy moment air teacher force education model
state space token sequence layer matrix vector kernel tensor scan memory cache""".split()
VERBS = """be have do say get make go know take see come think look want give use find tell
ask work seem feel try leave call need become put mean keep let begin help talk turn start
show hear play run move like live believe hold bring happen write provide sit stand lose pay
meet include continue set learn change lead understand watch follow stop create speak read
allow add spend grow open walk win offer remember love consider appear buy wait serve die
send expect build stay fall cut reach kill remain compute train decode encode""".split()
ADJECTIVES = """good new first last long great little own other old right big high different
small large next early young important few public bad same able selective linear hidden
recurrent quick lazy brown bright dark happy strange simple complex final""".split()
NAMES = "Alice Bob Carol Dave Eve Mallory Trent Peggy Victor Walter Mamba Albert Gu Tri Dao".split()
CONTRACTIONS = ["it's", "don't", "can't", "we're", "they've", "I'm", "you'll", "she'd",
                "won't", "isn't", "that's", "he's", "we'll", "I've", "you'd", "they're"]

MULTILINGUAL = [
    "Le cœur a ses raisons que la raison ne connaît point.",
    "Où est la bibliothèque ? Déjà vu, naïve façade, élève, garçon.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein. Straße, Größe, Mädchen.",
    "El niño pequeño comió una manzana en el año pasado. ¿Qué tal? ¡Olé!",
    "Ação, coração, pão e feijão são palavras portuguesas.",
    "Zażółć gęślą jaźń. Łódź jest dużym miastem w Polsce.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Türkçe öğrenmek çok güzel; ığdır, şehir, çiçek.",
    "Tiếng Việt có nhiều dấu: Hà Nội, phở, người, được, những.",
    "Γειά σου κόσμε! Η γλώσσα μου έδωσαν ελληνική. Ἐν ἀρχῇ ἦν ὁ λόγος.",
    "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Україна, їжак, ґанок; Беларусь, ўзор.",
    "مرحبا بالعالم! اللغة العربية جميلة جدا. ١٢٣ ٤٥٦",
    "שלום עולם! עברית נכתבת מימין לשמאל.",
    "नमस्ते दुनिया! हिन्दी भाषा बहुत सुंदर है। १२३४",
    "বাংলা ভাষা খুব মিষ্টি। তামিল: வணக்கம் உலகம்!",
    "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ ๑๒๓",
    "你好，世界！我们今天学习选择性状态空间模型。一二三四五",
    "日本語のテキスト：こんにちは、世界。カタカナとひらがなと漢字。",
    "한국어 텍스트: 안녕하세요, 세계! 상태 공간 모델을 공부합니다.",
    "Ελληνικά και English mixed με Русский текст и 中文字符 together.",
    "ქართული ენა ლამაზია. Հայերեն լեզու. አማርኛ ቋንቋ።",
    "Emoji: 😀 😂 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🇯🇵 ❤️ 🏳️‍🌈 1️⃣ ✨🚀",
    "Math: ∑ᵢ xᵢ² ≤ ∞, α + β = γ, √2 ≈ 1.414, ℝⁿ → ℂ, ½ ¼ ⅓ Ⅻ",
    "Fullwidth：ＡＢＣ　１２３　ｆｕｌｌ　ｗｉｄｔｈ",
]

CODE_TEMPLATES = [
    "def {f}({a}, {b}):\n    return {a} * {b} + {n}\n",
    "for (int {a} = 0; {a} < {n}; ++{a}) {{\n\t{b}[{a}] = {f}({a});\n}}\n",
    "if ({a} != nullptr && {a}->{b} >= {n}) {{ {f}(); }}\n",
    "const auto {a} = std::vector<float>({n}, 0.5f); // {f}\n",
    "{a} = {{'{b}': {n}, \"{f}\": [{n}, {n}]}}\n",
    "    # TODO({a}): {f} the {b} before {n} steps\n",
    "SELECT {a}, {b} FROM {f} WHERE id = {n};\n",
    "<div class=\"{a}\">{b} &amp; {f}</div>\n",
    "$ ./{f} --{a}={n} --{b} 2>&1 | tee log.txt\n",
]
IDENTIFIERS = ["x", "y", "i", "j", "idx", "count", "buffer", "hidden_state", "dt", "A_log",
               "conv1d", "in_proj", "self", "value", "result", "token_ids", "logits"]


def english_sentence(r):
    words = [r.choice(NAMES) if r.random() < 0.3 else r.choice(ADJECTIVES).capitalize()]
    for _ in range(r.randint(3, 14)):
        k = r.random()
        if k < 0.35:
            words.append(r.choice(NOUNS))
        elif k < 0.65:
            words.append(r.choice(VERBS))
        elif k < 0.8:
            words.append(r.choice(ADJECTIVES))
        elif k < 0.88:
            words.append(r.choice(CONTRACTIONS))
        elif k < 0.94:
            words.append(str(r.randint(0, 10 ** r.randint(1, 6))))
        else:
            words.append(r.choice(NOUNS) + r.choice([",", ";", ":", " -"]))
    return " ".join(words) + r.choice([".", ".", ".", "!", "?", "...", "?!"])


def code_snippet(r):
    return r.choice(CODE_TEMPLATES).format(f=r.choice(IDENTIFIERS), a=r.choice(IDENTIFIERS),
                                           b=r.choice(IDENTIFIERS), n=r.randint(0, 4096))


def training_corpus():
    r = random.Random(20240611)
    lines = []
    for _ in range(12000):
        lines.append(english_sentence(r))
    for _ in range(3000):
        lines.append(code_snippet(r))
    for _ in range(60):
        lines.extend(MULTILINGUAL)
    return lines


# ---- test cases ----------------------------------------------------------------------------

WHITE = [" ", "  ", "\t", "\n", "\r\n", "\n\n", "\u00a0", "\u3000", "\u2003", "\x0b", "\x0c",
         "\x85", "\u2028", "\u2029", "\u202f", "\u1680", "\u200b", "\ufeff", "   \n"]
PUNCT = ["!", "?", ".", ",", ";", ":", "-", "--", "---", "...", "…", "—", "(", ")", "[", "]",
         "{", "}", "\"", "'", "`", "«", "»", "¿", "¡", "@", "#", "$", "%", "^", "&", "*", "_",
         "+", "=", "<", ">", "/", "\\", "|", "~", "§", "°", "€", "£", "¥", "©", "®", "™"]
EMOJI = ["😀", "😂", "🥲", "👍", "👍🏻", "👍🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🧑‍🤝‍🧑", "🇫🇷",
         "🇺🇸", "🇯🇵", "🏴‍☠️", "🏳️‍🌈", "❤️", "❤", "☺️", "1️⃣", "#️⃣", "🦀", "🐍", "🚀",
         "✨", "🙏🏾", "🤷‍♀️", "👁‍🗨", "🫠", "🪿"]
NFC_SAMPLES = [
    "e\u0301", "E\u0301cole", "cafe\u0301", "A\u030a", "\u212b", "\u2126", "o\u0308\u0304",
    "a\u0323\u0302", "a\u0302\u0323", "\u1e0b\u0323", "d\u0307\u0323", "\u0958", "\u2adc",
    "\u1100\u1161", "\u1100\u1161\u11a8", "\u1100\u1161 \u1102\u1165\u11ab", "\uac00\u11a8",
    "\u110b\u1161\u11ab\u1102\u1167\u11bc", "n\u0303o", "\u0041\u0300\u0301", "\u0041\u0301\u0300",
    "\u03b1\u0313\u0301\u0345", "\u1f00\u0345", "\u0399\u0308\u0301", "\u0415\u0308", "\u0418\u0306",
    "\u0928\u093c", "\u0915\u093c", "\u09c7\u09be", "\u0b47\u0b3e", "\u0bc6\u0bbe", "\u0cbf\u0cd5",
    "\u0dd9\u0dcf", "\u1025\u102e", "\u05e9\u05c1\u05bc", "\u05e9\u05bc\u05c1", "\u0627\u0653",
    "\u0648\u0654", "\u00c5\u0327", "\u0063\u0327\u0301", "\u1ec7", "\u0065\u0323\u0302",
    "\u0065\u0302\u0323", "q\u0307\u0323", "\u0301abc", "\u0301\u0301", "x\u0300\u0316\u0301",
    "\u1e9b\u0323", "\u0073\u0323\u0307", "\u00e9\u0301", "\u304b\u3099", "\u30cf\u309a",
    "\u0061\u0338\u0338", "\u2260", "=\u0338", "\u226f", ">\u0338", "\u0041\u20d7",
    "\U000110a5\U000110ba", "\U00011131\U00011127", "\U0001d15e", "\U0001d158\U0001d165",
    "a\u0897b", "a\u0345\u0897", "a\u1df6\u0323", "\U00011935\U00011930", "\U000105d2\u0307",
    "\u0e40\u0e01\u0e47", "\u0f71\u0f72", "\u0f40\u0fb5", "\u0f73", "\u0344",
]
SCRIPT_CHARS = {
    "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœšžčřł",
    "greek": "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέήίόύώϊϋΐΰ",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯіїєґ",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي٠١٢٣٤٥٦٧٨٩ًٌٍَُِّْ",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשתךםןףץ\u05b0\u05b4\u05bc",
    "devanagari": "अआइईउऊएऐओऔकखगघङचछजझञटठडढणतथदधनपफबभमयरलवशषसह\u093e\u093f\u0940\u0941\u094d०१२३",
    "cjk": "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生",
    "kana": "あいうえおかきくけこさしすせそアイウエオカキクケコサシスセソー",
    "hangul": "가나다라마바사아자차카타파하한국어세계안녕하세요",
    "thai": "กขคงจฉชซญฎฏฐฑฒณดตถทธนบปผฝพฟภมยรลวศษสหฬอฮะาำิีึืุูเแโใไ่้๊๋๑๒๓",
    "digits": "0123456789٠١٢٣٤٥٦٧٨٩०१२३४५६७८९²³¹¼½¾ⅠⅡⅢⅣ①②③",
    "marks": "\u0300\u0301\u0302\u0303\u0308\u030a\u0323\u0327\u0328\u0345\u0338\u20d7\u093c\u3099\u309a",
}


def random_scalar(r):
    while True:
        cp = r.randrange(0x10000) if r.random() < 0.6 else r.randrange(0x110000)
        if not 0xD800 <= cp < 0xE000:
            return chr(cp)


def random_mixed(r):
    pools = list(SCRIPT_CHARS.values()) + ["".join(WHITE), "".join(PUNCT), "".join(EMOJI)]
    out = []
    for _ in range(r.randint(1, 24)):
        k = r.random()
        if k < 0.55:
            out.append(r.choice(r.choice(pools)))
        elif k < 0.7:
            out.append(r.choice(WHITE))
        elif k < 0.8:
            out.append(r.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'", " '"]))
        elif k < 0.85:
            out.append(r.choice(["<|endoftext|>", "<|padding|>", "<|endoftext", "|>"]))
        else:
            out.append(random_scalar(r))
    return "".join(out)


def cases_main():
    r = random.Random(7)
    cases = ["", " ", "  ", "\n", "a", "A", "0", "'", "<|endoftext|>", "<|padding|>"]
    cases += [chr(c) for c in range(128)]  # every ASCII character alone
    cases += [english_sentence(r) for _ in range(500)]  # prose
    for c in CONTRACTIONS + ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]:  # contractions
        cases += [c, c.upper(), f"Bob{c[c.index(chr(39)):]}", f" {c} ", f"x{c}y", f"{c}{c}"]
    cases += ["'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "JOHN'S", "it'S", "''s", "'''",
              "'s'", " 's", "''", "'x", "'1", "'ss", "'rel", "'llama", "'dd", "rock'n'roll",
              "\u2019s", "it\u2019s", "`s", "'\u0301s", "'\u00e9"]
    for _ in range(150):  # digits and long digit runs
        n = "".join(r.choice("0123456789") for _ in range(r.randint(1, 80)))
        cases.append(r.choice(["{}", " {}", "x{}", "{} apples", "{}.{}", "{}-{}", "v{}", "{},{}"])
                     .format(n, n[::-1]))
    cases += ["1234567890" * 5, "3.14159265358979", "1e-9", "0x1F", "１２３", "٣٤٥", "१२३", "½²"]
    for _ in range(250):  # white-space runs
        parts = [r.choice(WHITE) for _ in range(r.randint(1, 5))]
        word = r.choice(NOUNS + ["", "", "x", "1", "!", "é", "中"])
        cases.append(r.choice(["{w}{s}", "{s}{w}", "{w}{s}{w}", "{s}", "{w}{s}{s}{w}{s}"])
                     .format(w=word, s="".join(parts)))
    cases += ["a  b", "a   b", "a \n b", "a\n\nb", "a \t\tb", "  leading", "trailing  ",
              "trailing \n", "\u00a0\u00a0x", "x\u3000\u3000y", " \u00a0x", "\u00a0 x"]
    for _ in range(150):  # punctuation runs
        run = "".join(r.choice(PUNCT) for _ in range(r.randint(1, 8)))
        cases.append(r.choice(["{p}", " {p}", "word{p}", "{p}word", "{p} {p}", "a{p}1"])
                     .format(p=run))
    cases += MULTILINGUAL
    for name, chars in SCRIPT_CHARS.items():  # scripts
        for _ in range(30):
            w = "".join(r.choice(chars) for _ in range(r.randint(1, 12)))
            cases.append(r.choice(["{w}", " {w}", "{w} {w}", "The {w}.", "{w}123", "{w}!"])
                         .format(w=w))
    cases += NFC_SAMPLES
    cases += [s + " " + s for s in NFC_SAMPLES] + [" " + s.upper() for s in NFC_SAMPLES]
    for _ in range(120):  # emoji
        cases.append("".join(r.choice(EMOJI + [" ", "a", "!"]) for _ in range(r.randint(1, 6))))
    cases += ["Hello<|endoftext|>world", "<|endoftext|><|endoftext|>", " <|endoftext|> ",
              "<|endoftext|>\n", "a<|padding|>b", "<|endoftext|", "<|endoftext|>>",
              "<<|endoftext|>", "<|end<|endoftext|>oftext|>", "text <|endoftext|>More text",
              "<|ENDOFTEXT|>", "<|padding|><|endoftext|>", "e\u0301<|endoftext|>\u0301"]
    for _ in range(120):  # code
        cases.append("".join(code_snippet(r) for _ in range(r.randint(1, 3))))
    for _ in range(700):  # random mixtures
        cases.append(random_mixed(r))
    for _ in range(250):  # random code points of the whole range
        cases.append("".join(random_scalar(r) for _ in range(r.randint(1, 10))))
    cases.append(" ".join(english_sentence(r) for _ in range(40)))  # a longer text
    cases.append("".join(random_mixed(r) for _ in range(20)))
    return cases


def cases_split():
    r = random.Random(11)
    cases = ["", " ", "a", "Hello world", "hello  world", "a,b", "  x", "x  ", "\n\nx",
             "<mask>", "a <mask> b", "a<mask>b", "a   <mask>   b", "<mask><mask>", " \u3000<mask>\u3000 ",
             "word", "a word here", "words", "sword", "word!", "_word", "word_", "wordword",
             "é word", "1word", "word1", "\u00e9word", "word\u0301", "x\u200dword", "Ⓐword",
             "café", "cafe\u0301", "CAFÉ", "le café noir", "cafe\u0301s", "e\u0301!", "é!",
             "xe\u0301!y", "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|>word<mask>café",
             "word<mask>word", "word <mask> word", "<sep>", "a<sep>b", "a <sep> b", "<sep>word"]
    cases += [english_sentence(r) for _ in range(150)]
    cases += MULTILINGUAL + NFC_SAMPLES[:30]
    for _ in range(150):
        swap = r.choice(["<mask>", "word", "café", "<sep>"])
        cases.append(random_mixed(r).replace("<|padding|>", swap))
    for _ in range(40):
        cases.append("".join(random_scalar(r) for _ in range(r.randint(1, 8))))
    return cases


# ---- building ------------------------------------------------------------------------------

def train_main(corpus):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    assert tok.get_vocab_size() == 1000, tok.get_vocab_size()
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|padding|>") == 1
    return tok


def train_split(corpus):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus[::7], trainer=trainer)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True,
                                       normalized=False),
                            AddedToken("<sep>", single_word=True, special=True,
                                       normalized=False)])
    tok.add_tokens([AddedToken("word", single_word=True, normalized=True, special=False),
                    AddedToken("café", normalized=True, special=False),
                    AddedToken("e\u0301!", normalized=False, special=False)])
    # Rewrite the merges in the older "a b" string form; read back to be sure HF takes it.
    spec = json.loads(tok.to_str())
    spec["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                               for m in spec["model"]["merges"]]
    return Tokenizer.from_str(json.dumps(spec)), spec


LLAMA_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def train_llama(corpus):
    """A LLaMA-style tokenizer.json (legacy form) trained on the corpus; returns its spec."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    # Training sees words that begin at each "▁", as SentencePiece does.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=344, min_frequency=2, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120)
    tok.train_from_iterator(corpus, trainer=trainer)
    spec = json.loads(tok.to_str())
    old = spec["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for token, _ in sorted(old.items(), key=lambda kv: kv[1]):
        if token not in vocab:
            vocab[token] = len(vocab)
    assert len(vocab) == 600, len(vocab)
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = [
        {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for t in ("<unk>", "<s>", "</s>")]
    spec["pre_tokenizer"] = None
    spec["decoder"] = LLAMA_DECODER
    return spec


def llama_variants(spec, texts):
    def metaspace(scheme, split):
        return {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split}

    patches = {
        "metaspace_first_nosplit": {"normalizer": None, "pre_tokenizer": metaspace("first", False)},
        "metaspace_first_split": {"normalizer": None, "pre_tokenizer": metaspace("first", True)},
        "metaspace_always_split_decoder": {"normalizer": None, "pre_tokenizer": metaspace("always", True),
                                           "decoder": metaspace("always", True)},
        "metaspace_never_decoder": {"normalizer": None, "pre_tokenizer": metaspace("never", False),
                                    "decoder": {"type": "Sequence", "decoders": [
                                        {"type": "ByteFallback"}, metaspace("never", False)]}},
        "no_decoder": {"decoder": None},
        "strip_each_token": {"decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            {"type": "Fuse"}]}},
        "unk_no_byte_fallback": {"model": {"byte_fallback": False}},
    }
    out = []
    for name, patch in patches.items():
        variant = json.loads(json.dumps(spec))
        for key, value in patch.items():
            if key == "model":
                variant["model"].update(value)
            else:
                variant[key] = value
        tok = Tokenizer.from_str(json.dumps(variant))
        out.append({"name": name, "patch": patch, "cases": [make_case(tok, t) for t in texts]})
    return out


def make_case(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    case = {"text": text, "ids": ids}
    decoded = tok.decode(ids, skip_special_tokens=False)
    if decoded != text:
        case["decoded"] = decoded
    return case


def write_cases(tok, texts, path):
    lines = [json.dumps(make_case(tok, t), ensure_ascii=False, separators=(",", ":"))
             for t in texts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def byte_char(b):
    """GPT-2's printable character for byte b."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    if b in printable:
        return chr(b)
    return chr(0x100 + [x for x in range(256) if x not in printable].index(b))


def tiny_model(**options):
    """A hand-made BPE over printable ASCII only: other bytes are unknown to it."""
    vocab = {"<unk>": 0}
    for b in range(0x20, 0x7F):
        vocab[byte_char(b)] = len(vocab)
    merges = [("t", "h"), ("th", "e"), ("Ġ", "the"), ("h", "e"), ("e", "r"),
              ("Ġ", "a"), ("i", "n"), ("in", "g")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    if options.pop("with_byte_tokens", False):
        for b in range(256):
            if b not in (0xA9, 0x9F):  # two bytes left without a <0x..> token
                vocab[f"<0x{b:02X}>"] = len(vocab)
    return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False, "vocab": vocab, "merges": [list(m) for m in merges],
            **options}


def prefix_suffix_model():
    """Subword prefix "##" and word suffix "</w>" over lower-case letters."""
    letters = [byte_char(b) for b in range(0x61, 0x7B)] + ["Ġ"]
    vocab = {}
    for c in letters:
        for form in (c, "##" + c, c + "</w>", "##" + c + "</w>"):
            vocab[form] = len(vocab)
    merges = [("t", "##h"), ("th", "##e</w>"), ("th", "##e"), ("Ġ", "##t"), ("Ġt", "##h"),
              ("a", "##n"), ("an", "##d</w>"), ("##i", "##n"), ("##in", "##g</w>")]
    for a, b in merges:
        vocab.setdefault(a + b[2:], len(vocab))
    return {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "##",
            "end_of_word_suffix": "</w>", "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False, "vocab": vocab, "merges": merges}


def variants(main_spec):
    r = random.Random(5)
    texts = ["", "a", "Hello world", "the other thing", "  the  ", "then there", "sing  ing",
             "caf\u00e9 na\u00efve \u00a9", "tab\there\nnew line", "\U0001F600 ok", "x\u00e9\u00e9y",
             "<|endoftext|>the", "a<|endoftext|>b", "the,the;;a, b", "a , b,,c", ",start", "end,",
             "it's 123", "\u4e2d\u6587 the", "e\u0301t\u00e9", "\u00a9\u00a9\u00a9"]
    texts += [random_mixed(r) for _ in range(20)] + [english_sentence(r) for _ in range(10)]

    def patched(patch):
        spec = json.loads(json.dumps(main_spec))
        for key, value in patch.items():  # a merge patch two levels deep is all we need
            if isinstance(value, dict) and key == "model":
                spec[key].update(value)
            else:
                spec[key] = value
        return spec

    def tiny(model, **more):
        spec = patched(more)
        spec["model"] = model
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in model["vocab"]]
        return spec

    def split(pattern, behavior):
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": pattern, "behavior": behavior, "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]}

    patches = {
        "bytelevel_add_prefix_space": {"pre_tokenizer": {
            "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
            "use_regex": True}},
        "ignore_merges": {"model": {"ignore_merges": True}},
    }
    for behavior in ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"):
        patches[f"split_string_{behavior}"] = {"pre_tokenizer": split({"String": ","}, behavior)}
    patches["split_regex_MergedWithNext"] = {
        "pre_tokenizer": split({"Regex": GPT2_PATTERN}, "MergedWithNext")}
    specs = {name: (patched(patch), {"patch": patch}) for name, patch in patches.items()}
    for name, spec in {
        "unk": tiny(tiny_model(unk_token="<unk>")),
        "unk_fused": tiny(tiny_model(unk_token="<unk>", fuse_unk=True)),
        "unknown_dropped": tiny(tiny_model()),
        "byte_fallback": tiny(tiny_model(unk_token="<unk>", byte_fallback=True,
                                         with_byte_tokens=True)),
        "prefix_suffix": tiny(prefix_suffix_model(),
                              normalizer={"type": "Sequence", "normalizers": []}),
    }.items():
        specs[name] = (spec, {"tokenizer": spec})
    out = []
    for name, (spec, stored) in specs.items():
        tok = Tokenizer.from_str(json.dumps(spec))
        out.append({"name": name, **stored, "cases": [make_case(tok, t) for t in texts]})
    return out


def main():
    corpus = training_corpus()
    main_tok = train_main(corpus)
    main_tok.save(str(HERE / "tokenizer.json"))
    main_tok = Tokenizer.from_file(str(HERE / "tokenizer.json"))  # what the C++ side reads
    n_main = write_cases(main_tok, cases_main(), HERE / "cases.jsonl")

    split_tok, spec = train_split(corpus)
    (HERE / "tokenizer_split.json").write_text(
        json.dumps(spec, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    split_tok = Tokenizer.from_file(str(HERE / "tokenizer_split.json"))
    n_split = write_cases(split_tok, cases_split(), HERE / "cases_split.jsonl")

    variant_list = variants(json.loads(main_tok.to_str()))
    variants_text = json.dumps(variant_list, ensure_ascii=False, separators=(",", ":"))
    (HERE / "variants.json").write_text(variants_text + "\n", encoding="utf-8")
    llama_spec = train_llama(corpus)
    (HERE / "tokenizer_llama.json").write_text(
        json.dumps(llama_spec, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    llama_tok = Tokenizer.from_file(str(HERE / "tokenizer_llama.json"))
    llama_texts = cases_main() + ["<s>Hello</s>", "a <s> b </s>c", "<s> <s>", " leading space",
                                  "double  space", "\n\nnew lines\n", "\u2581already marked",
                                  "trailing ", "   ", "<unk>x"]
    n_llama = write_cases(llama_tok, llama_texts, HERE / "cases_llama.jsonl")
    variant_texts = llama_texts[:-10:25] + llama_texts[-10:]
    llama_variant_list = llama_variants(llama_spec, variant_texts)
    (HERE / "variants_llama.json").write_text(
        json.dumps(llama_variant_list, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"tokenizers {tokenizers.__version__}, Python unicodedata {unicodedata.unidata_version}: "
          f"{n_main} cases for tokenizer.json, {n_split} for tokenizer_split.json, "
          f"{len(variant_list)} variants, {n_llama} cases for tokenizer_llama.json, "
          f"{len(llama_variant_list)} LLaMA-kind variants")


if __name__ == "__main__":
    main()
