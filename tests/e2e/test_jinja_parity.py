"""anvil's Jinja renderer (through the jinja_render test tool) against jinja2 configured as
transformers configures chat templates (ImmutableSandboxedEnvironment, trim_blocks,
lstrip_blocks, loopcontrols, a {% generation %} tracker, its tojson, raise_exception,
strftime_now at a fixed date), on a corpus of real chat templates:
  - llama.cpp's models/templates/*.jinja from the llama-cpp-python sdist on PyPI, downloaded
    once into CORPUS_DIR (in the build tree, never committed);
  - the SmolLM2 fixture's template (BUILD/models/smollm2-135m-instruct) when it is there;
  - anvil's own three layouts, as tests/e2e/test_chat_template.py writes them;
  - any file named in ANVIL_JINJA_EXTRA (colon-separated .jinja or tokenizer_config.json).
Each template renders a set of conversations (system or not, one and several turns, tool
calls, unicode, empty content, add_generation_prompt both ways), with the context
transformers' render() gets (tools and documents None when not given). A template is identical
when every rendering is byte-identical (both sides raising counts as agreement), refused
when anvil stops with an unsupported-construct error, differing otherwise; the generation
ranges are compared too where a template has {% generation %}. Passes when none differ, and
when upper/lower/title/capitalize over the BMP (case_sweep) and '%' formatting (percent_sweep)
are jinja2's.
With transformers importable, the reference tier also checks that transformers'
render_jinja_template gives what the plain-jinja2 reference gives.

Usage: test_jinja_parity.py JINJA_RENDER CORPUS_DIR   (exit 77: PyPI cannot be reached)"""
import ast
import datetime
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

RENDER = sys.argv[1]
CORPUS = sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
FIXED_DATE = datetime.datetime(2024, 7, 26, 9, 30, 0)


def fetch_corpus():
    """The llama.cpp templates of the llama-cpp-python sdist, extracted into CORPUS/templates."""
    out = os.path.join(CORPUS, "templates")
    if glob.glob(os.path.join(out, "*.jinja")):
        return sorted(glob.glob(os.path.join(out, "*.jinja")))
    sdist_dir = os.path.join(CORPUS, "sdist")
    os.makedirs(sdist_dir, exist_ok=True)
    if not glob.glob(os.path.join(sdist_dir, "*.tar.gz")):
        # the sdist only (its build requirements may come as wheels: pip prepares its metadata)
        p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
                            "llama-cpp-python", "-d", sdist_dir],
                           capture_output=True, text=True)
        if not glob.glob(os.path.join(sdist_dir, "*.tar.gz")):
            print(f"skipped: the llama-cpp-python sdist cannot be fetched from PyPI\n{p.stdout}\n{p.stderr}")
            sys.exit(77)
    os.makedirs(out, exist_ok=True)
    with tarfile.open(glob.glob(os.path.join(sdist_dir, "*.tar.gz"))[0]) as tar:
        for m in tar.getmembers():
            if "/models/templates/" in m.name and m.name.endswith(".jinja") and m.isfile():
                with open(os.path.join(out, os.path.basename(m.name)), "wb") as f:
                    f.write(tar.extractfile(m).read())
    return sorted(glob.glob(os.path.join(out, "*.jinja")))


def template_of(path):
    if path.endswith(".json"):
        t = json.load(open(path, encoding="utf-8")).get("chat_template")
        if isinstance(t, list):
            t = next((x["template"] for x in t if x.get("name") == "default"), None)
        return t
    return open(path, encoding="utf-8").read()


def corpus():
    templates = {os.path.basename(p): template_of(p) for p in fetch_corpus()}
    smol = os.path.join(os.path.dirname(os.path.abspath(CORPUS)), "models", "smollm2-135m-instruct",
                        "tokenizer_config.json")
    extra = [p for p in os.environ.get("ANVIL_JINJA_EXTRA", "").split(":") if p]
    for p in [smol] + extra:
        if os.path.exists(p) and template_of(p):
            templates[p] = template_of(p)
    # anvil's own layouts, read from the test that defines them (not repeated here)
    tree = ast.parse(open(os.path.join(HERE, "test_chat_template.py"), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "TEMPLATES":
            for name, text in ast.literal_eval(node.value).items():
                templates["anvil:" + name] = text
    return templates


class GenerationTracker(Extension):
    """transformers' AssistantTracker: {% generation %} bodies render in place, and their
    ranges are measured on the output streamed so far."""
    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        self.blocks = None
        self.ranges = None

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation"), [], [], body).set_lineno(lineno)

    def _generation(self, caller):
        rv = caller()
        if self.blocks is not None:
            start = len("".join(self.blocks))
            self.ranges.append((start, start + len(rv)))
        return rv


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: FIXED_DATE.strftime(fmt)
    env.globals["dict"] = dict
    return env


ENV = make_env()
TRACKER = next(e for e in ENV.extensions.values() if isinstance(e, GenerationTracker))


def reference(template, ctx):
    """(text, char ranges) or an exception."""
    try:
        t = ENV.from_string(template)
    except Exception as e:  # noqa: BLE001  a template jinja2 cannot parse
        return e
    TRACKER.blocks, TRACKER.ranges = [], []
    try:
        for block in t.generate(**ctx):
            TRACKER.blocks.append(block)
        return "".join(TRACKER.blocks), list(TRACKER.ranges)
    except Exception as e:  # noqa: BLE001  raise_exception, or a template error
        return e
    finally:
        TRACKER.blocks = TRACKER.ranges = None


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}]
CALL = {"id": "call_0001", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}}


def conversations(template):
    sys_msg = {"role": "system", "content": "You are a helpful assistant."}
    u1 = {"role": "user", "content": "Hello!"}
    a1 = {"role": "assistant", "content": "Hi! How can I help?"}
    u2 = {"role": "user", "content": "naïve café — 東京 🙂 “quoted” \\ back\nslash\tand tab  "}
    a2 = {"role": "assistant", "content": "  Sure:\n\n- one\n- two\n"}
    empty = {"role": "assistant", "content": ""}
    convs = [
        ("one turn", [u1]),
        ("system, one turn", [sys_msg, u1]),
        ("several turns", [u1, a1, u2, a2]),
        ("system, several turns", [sys_msg, u1, a1, u2]),
        ("unicode", [u2, a2]),
        ("empty content", [u1, empty, {"role": "user", "content": ""}]),
    ]
    if "tool" in template:
        convs.append(("tools", [sys_msg, {"role": "user", "content": "Weather in Zürich?"},
                                {"role": "assistant", "content": "", "tool_calls": [CALL]},
                                {"role": "tool", "name": "get_weather", "tool_call_id": "call_0001",
                                 "content": "{\"temperature\": 21.5, \"sky\": \"sunny\"}"},
                                {"role": "assistant", "content": "It is 21.5 °C and sunny."}]))
    cases = []
    for name, msgs in convs:
        for agp in (False, True):
            # as transformers calls render(): tools and documents are None (defined) when not given
            ctx = {"messages": msgs, "tools": TOOLS if name == "tools" else None, "documents": None,
                   "add_generation_prompt": agp, "bos_token": "<s>", "eos_token": "</s>"}
            cases.append((f"{name}, add_generation_prompt={agp}", ctx))
    return cases


def char_ranges(text_bytes, byte_ranges):
    return [(len(text_bytes[:b].decode("utf-8")), len(text_bytes[:e].decode("utf-8"))) for b, e in byte_ranges]


def ours(tpl_path, ctx, tmp):
    ctx_path = os.path.join(tmp, "ctx.json")
    with open(ctx_path, "w", encoding="utf-8") as f:
        json.dump(ctx, f, ensure_ascii=False)
    p = subprocess.run([RENDER, tpl_path, ctx_path, "--strftime", FIXED_DATE.strftime("%Y-%m-%d %H:%M:%S"),
                        "--generation"], capture_output=True, timeout=60)
    if p.returncode != 0:
        return p.returncode, p.stderr.decode("utf-8", "replace").strip()
    out = json.loads(p.stdout.decode("utf-8"))
    text = out["text"]
    return 0, (text, char_ranges(text.encode("utf-8"), out["generation"]))


def transformers_tier(template, cases):
    """transformers' own rendering equals the plain-jinja2 reference (None: not importable)."""
    try:
        from transformers.utils import chat_template_utils as ctu
    except Exception:  # noqa: BLE001
        return None
    bad = 0
    for _, ctx in cases:
        want = reference(template, ctx)
        if isinstance(want, Exception) or "strftime_now" in template:
            continue  # transformers' strftime_now reads the clock
        kwargs = {k: v for k, v in ctx.items() if k not in ("messages", "tools", "documents", "add_generation_prompt")}
        try:
            got, _ = ctu.render_jinja_template(conversations=[ctx["messages"]], chat_template=template,
                                               tools=ctx.get("tools"),
                                               add_generation_prompt=ctx["add_generation_prompt"], **kwargs)
        except Exception:  # noqa: BLE001
            bad += 1
            continue
        bad += got[0] != want[0]
    return bad


def case_sweep(tmp):
    """upper/lower/title/capitalize (filters and str methods) of every non-ASCII code point of
    the BMP and of the cased scripts above it (Deseret to Adlam), in words with final sigmas:
    byte-identical to jinja2. Returns the number of differing strings."""
    cps = [c for c in list(range(0x80, 0x10000)) + list(range(0x10400, 0x10500)) + list(range(0x1E900, 0x1E960))
           if not 0xD800 <= c < 0xE000]
    words = ["".join(chr(c) for c in cps[k:k + 7]) for k in range(0, len(cps), 7)]
    strings = [" ".join(words[k:k + 6]) + " ΑΣ. σΣ-Σ" for k in range(0, len(words), 6)]
    template = ("{% for s in strings %}{{ s|upper }}|{{ s|lower }}|{{ s|title }}|{{ s|capitalize }}|"
                "{{ s.title() }}|{{ s.capitalize() }}\n{% endfor %}")
    path = os.path.join(tmp, "case.jinja")
    with open(path, "w", encoding="utf-8") as f:
        f.write(template)
    want = reference(template, {"strings": strings})[0].split("\n")
    rc, got = ours(path, {"strings": strings}, tmp)
    if rc != 0:
        print(f"case sweep: anvil failed: {got}")
        return len(strings)
    bad = [(w, g) for w, g in zip(want, got[0].split("\n")) if w != g]
    for w, g in bad[:3]:
        print(f"case sweep differs:\n  jinja2: {w!r}\n  anvil:  {g!r}")
    print(f"case sweep: {len(strings) - len(bad)} of {len(strings)} strings identical")
    return len(bad)


def percent_sweep(tmp):
    """printf-style '%' formatting over flags x width x precision x conversion x value, each
    combination Python accepts, as one template of literals: byte-identical to jinja2. Returns
    the number of differing lines."""
    values = ["0", "7", "-42", "255", "3.14159", "-2.5e-7", "123456.789", "true", "'é'", "'abc'", "none", "[1, 'a']"]
    lines = []
    for flags in ["", "-", "+", " ", "#", "0", "-+", "+0", "#0", " 0"]:
        for width in ["", "5", "12"]:
            for precision in ["", ".0", ".3"]:
                for conv in "sdiuxXoeEfFgGr":
                    fmt = f"[%{flags}{width}{precision}{conv}]"
                    for v in values:
                        py = {"true": "True", "none": "None"}.get(v, v)
                        try:
                            fmt % (eval(py),)  # noqa: S307  literals written above
                        except (TypeError, ValueError):
                            continue
                        lines.append(f"{{{{ '{fmt}' % ({v},) }}}}")
    template = "\n".join(lines)
    path = os.path.join(tmp, "percent.jinja")
    with open(path, "w", encoding="utf-8") as f:
        f.write(template)
    want = reference(template, {})
    rc, got = ours(path, {}, tmp)
    if rc != 0 or isinstance(want, Exception):
        print(f"percent sweep: anvil exit {rc} {got if rc else ''}, jinja2 {want if isinstance(want, Exception) else 'ok'}")
        return len(lines)
    bad = [(t, w, g) for t, w, g in zip(lines, want[0].split("\n"), got[0].split("\n")) if w != g]
    for t, w, g in bad[:5]:
        print(f"percent sweep differs: {t}\n  jinja2: {w!r}\n  anvil:  {g!r}")
    print(f"percent sweep: {len(lines) - len(bad)} of {len(lines)} formats identical")
    return len(bad)


def main():
    templates = corpus()
    counts = {"identical": 0, "refused": 0, "differing": 0}
    reference_mismatch = 0
    reference_ran = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, template in sorted(templates.items()):
            tpl_path = os.path.join(tmp, "template.jinja")
            with open(tpl_path, "w", encoding="utf-8") as f:
                f.write(template)
            verdict, detail = "identical", ""
            cases = conversations(template)
            for case, ctx in cases:
                want = reference(template, ctx)
                rc, got = ours(tpl_path, ctx, tmp)
                if rc != 0:
                    if isinstance(want, Exception):
                        if isinstance(want, jinja2.exceptions.TemplateSyntaxError) or rc == 2:
                            continue  # both refuse this conversation
                    if rc == 2 and "unsupported template construct" in got:
                        verdict, detail = "refused", f"{case}: {got}"
                        continue
                    verdict, detail = "differing", f"{case}: anvil failed (exit {rc}): {got}\n  jinja2: {want!r}"[:2000]
                    break
                if isinstance(want, Exception):
                    verdict, detail = "differing", f"{case}: jinja2 raised {want!r}, anvil rendered {got[0]!r}"[:2000]
                    break
                if got != want:
                    verdict, detail = "differing", f"{case}:\n  jinja2: {want!r}\n  anvil:  {got!r}"[:3000]
                    break
            counts[verdict] += 1
            print(f"{verdict:9s} {name}" + (f"\n  {detail}" if detail else ""), flush=True)
            bad = transformers_tier(template, cases) if os.environ.get("ANVIL_JINJA_TRANSFORMERS", "1") == "1" else None
            if bad is not None:
                reference_ran = True
                reference_mismatch += bad
        case_bad = case_sweep(tmp) + percent_sweep(tmp)
    total = sum(counts.values())
    print(f"\n{total} templates: {counts['identical']} identical, {counts['refused']} refused, "
          f"{counts['differing']} differing")
    if reference_ran:
        print(f"reference tier (transformers' render_jinja_template vs plain jinja2): {reference_mismatch} mismatches")
    sys.exit(1 if counts["differing"] or reference_mismatch or case_bad else 0)


if __name__ == "__main__":
    main()
