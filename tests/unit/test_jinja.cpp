// The Jinja renderer, construct by construct, with the strings jinja2 (as transformers
// configures it) renders for the same templates; tests/e2e/test_jinja_parity.py compares
// the two on real chat templates.
#include "core/error.h"
#include "data/jinja.h"

#include <gtest/gtest.h>

#include <string>

namespace {

using anvil::data::jinja::RenderOptions;
using anvil::data::jinja::Template;
using json = nlohmann::ordered_json;

std::string render(const std::string& tpl, const json& ctx = json::object(), const RenderOptions& opt = {}) {
  return Template(tpl, "test.jinja").render(ctx, opt).text;
}

// The message of the user error rendering (or parsing) `tpl` raises.
std::string error_of(const std::string& tpl, const json& ctx = json::object(), const RenderOptions& opt = {}) {
  try {
    render(tpl, ctx, opt);
  } catch (const anvil::Error& e) {
    EXPECT_EQ(e.kind(), anvil::ErrorKind::user) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error for " << tpl;
  return "";
}

const json kChat = json::parse(R"({"messages": [
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": " Hi "},
  {"role": "assistant", "content": "Hello!"}], "bos_token": "<s>", "eos_token": "</s>"})");

// A namespace holding itself (directly or in a list) would be a reference cycle that is
// never freed (the fuzzer found `{% set ns.n = ns %}`): refused, naming the line.
TEST(Jinja, NamespaceCannotHoldItself) {
  EXPECT_NE(error_of("{% set ns = namespace(a=0) %}\n{% set ns.n = ns %}").find("line 2"), std::string::npos);
  EXPECT_NE(error_of("{% set ns = namespace(a=0) %}{% set ns.n = [1, [ns]] %}").find("cannot hold a namespace"),
            std::string::npos);
  EXPECT_EQ(render("{% set ns = namespace(a=0) %}{% set ns.l = [1, {'k': 2}] %}{{ ns.l[1].k }}"), "2");
}

TEST(Jinja, IfElifElse) {
  const std::string t = "{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %}";
  EXPECT_EQ(render(t, {{"x", 1}}), "one");
  EXPECT_EQ(render(t, {{"x", 2}}), "two");
  EXPECT_EQ(render(t, {{"x", 5}}), "many");
}

TEST(Jinja, ForLoopVariables) {
  EXPECT_EQ(render("{% for m in messages %}{{ loop.index0 }}{{ loop.index }}{{ loop.revindex }}{{ loop.length }}"
                   "{{ 'F' if loop.first }}{{ 'L' if loop.last }}|{% endfor %}", kChat),
            "0133F|1223|2313L|");
  EXPECT_EQ(render("{% for x in [1, 2, 3] %}{{ loop.previtem is defined }}{{ loop.nextitem | default('-') }};{% endfor %}"),
            "False2;True3;True-;");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role }} {% endfor %}", kChat),
            "1user 2assistant ");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4, 5] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}"
                   "{% endif %}{{ x }}{% endfor %}"),
            "13");
  EXPECT_EQ(render("{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %}"), "aba");
}

TEST(Jinja, RecursiveLoop) {
  json ctx = json::parse(R"({"tree": [{"n": 1, "c": [{"n": 2, "c": []}]}, {"n": 3}]})");
  EXPECT_EQ(render("{% for i in tree recursive %}<{{ i.n }}:{{ loop.depth }}{% if i.c %}{{ loop(i.c) }}{% endif %}>{% endfor %}", ctx),
            "<1:1<2:2>><3:1>");
}

TEST(Jinja, SetScopingAndNamespace) {
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}"), "21");
  EXPECT_EQ(render("{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(render("{% set a, b = 'x', 'y' %}{{ b }}{{ a }}"), "yx");
  EXPECT_EQ(render("{% set blk %} B{{ 1 }} {% endset %}[{{ blk }}]"), "[ B1 ]");
  EXPECT_EQ(render("{% set blk | upper %}ab{% endset %}{{ blk }}"), "AB");
  EXPECT_EQ(render("{% if true %}{% set y = 3 %}{% endif %}{{ y }}"), "3");
}

TEST(Jinja, MacroAndCall) {
  EXPECT_EQ(render("{% macro tag(name, v='d') %}<{{ name }}={{ v }}>{% endmacro %}{{ tag('a') }}{{ tag('b', v=2) }}"),
            "<a=d><b=2>");
  EXPECT_EQ(render("{% macro box(t) %}[{{ t }}:{{ caller(5) }}]{% endmacro %}{% call(n) box('x') %}n={{ n }}{% endcall %}"),
            "[x:n=5]");
  EXPECT_NE(error_of("{% macro m(a) %}{% endmacro %}{{ m(1, zz=2) }}").find("no keyword argument 'zz'"), std::string::npos);
}

TEST(Jinja, FilterBlockAndRaw) {
  EXPECT_EQ(render("{% filter upper %}ab{{ 'c' }}{% endfilter %}"), "ABC");
  EXPECT_EQ(render("{% raw %}{{ x }}{% if %}{% endraw %}"), "{{ x }}{% if %}");
}

TEST(Jinja, Expressions) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }}"),
            "7 3 -4 2 3.5 1024 0.5");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' + 'c' }} {{ 'x' * 3 }} {{ [1] + [2] }}"), "a1NoneTrue abc xxx [1, 2]");
  EXPECT_EQ(render("{{ 1 < 2 < 3 }} {{ 'b' in 'abc' }} {{ 3 not in [1, 2] }} {{ 'k' in {'k': 1} }} {{ not 0 }}"),
            "True True True True True");
  EXPECT_EQ(render("{{ 'y' if 0 else 'n' }}{{ 'z' if false }}|{{ 0 or 'o' }}{{ 1 and 'a' }}"), "n|oa");
  EXPECT_EQ(render("{{ 'héllo wörld'[1:4] }} {{ [1, 2, 3, 4][::-1] }} {{ [1, 2, 3][-1] }} {{ 'abc'[::2] }}"),
            "éll [4, 3, 2, 1] 3 ac");
  EXPECT_EQ(render("{{ (1, 'a') }} {{ {'k': [1, none]} }} {{ [\"it's\"] }} {{ 1.0 }} {{ 1e20 }} {{ 0.0001 }} {{ 1/3 }}"),
            "(1, 'a') {'k': [1, None]} [\"it's\"] 1.0 1e+20 0.0001 0.3333333333333333");
  EXPECT_EQ(render("{{ messages[1]['content'] }}{{ messages[0].role }}{{ messages.0.role }}", kChat), " Hi systemsystem");
}

TEST(Jinja, Tests) {
  EXPECT_EQ(render("{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 's' is string }}{{ {} is mapping }}"
                   "{{ [] is iterable }}{{ 'x' is sequence }}{{ 1.5 is number }}{{ 1 is integer }}{{ true is boolean }}",
                   {{"x", 1}}),
            "TrueTrueTrueTrueTrueTrueTrueTrueTrueTrue");
  EXPECT_EQ(render("{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 2 is equalto 2 }}{{ 'a' is eq 'b' }}"
                   "{{ 'a' is ne 'b' }}{{ 'ab' is lower }}{{ 'AB' is upper }}{{ true is true }}{{ false is false }}"
                   "{{ none is sameas none }}{{ x is not defined }}"),
            "TrueTrueTrueTrueFalseTrueTrueTrueTrueTrueTrueTrue");
}

TEST(Jinja, Methods) {
  EXPECT_EQ(render("{{ ' a b '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'a,b'.split(',') }}|{{ 'a  b'.split() }}|"
                   "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ 'aXa'.replace('a', 'b') }}|"
                   "{{ 'ab'.upper() }}{{ 'AB'.lower() }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|"
                   "{{ '{}-{name}'.format(1, name='n') }}"),
            "a b|axx|['a', 'b']|['a', 'b']|TrueTrue|bXb|ABab|Hello World|Hello|1-n");
  EXPECT_EQ(render("{{ d.get('a') }}{{ d.get('z', 'dflt') }}{{ d.keys() | list }}{{ d.values() | list }}{% for k, v in d.items() %}"
                   "{{ k }}{{ v }}{% endfor %}",
                   {{"d", {{"a", 1}, {"b", 2}}}}),
            "1dflt['a', 'b'][1, 2]a1b2");
  EXPECT_NE(error_of("{% set l = [] %}{{ l.append(1) }}").find("list.append() is refused"), std::string::npos);
}

TEST(Jinja, Filters) {
  EXPECT_EQ(render("{{ ' x '|trim }}|{{ [1, 2]|length }}{{ 'héé'|length }}|{{ [1, 2]|join('-') }}|{{ u|default('d') }}"
                   "{{ ''|default('e', true) }}{{ ''|d('f') }}|{{ [3, 4]|first }}{{ [3, 4]|last }}|{{ 'ab'|list }}"),
            "x|23|1-2|de|34|['a', 'b']");
  json ctx = kChat;
  EXPECT_EQ(render("{{ messages|map(attribute='role')|join(',') }}|{{ messages|selectattr('role', 'equalto', 'user')|list|length }}"
                   "|{{ messages|rejectattr('role', 'in', ['user', 'system'])|map(attribute='content')|first }}"
                   "|{{ [0, 1, 2]|select|list }}{{ [1, 2, 3]|reject('odd')|list }}|{{ ['a', 'B']|map('upper')|list }}",
                   ctx),
            "system,user,assistant|1|Hello!|[1, 2][2]|['A', 'B']");
  EXPECT_EQ(render("{{ 42|string }}{{ '7'|int + 1 }}{{ 'x'|int }}{{ '2.5'|float }}{{ -3|abs }}{{ 2.5|round }}{{ 3.14159|round(2) }}"),
            "42802.532.03.14");
  EXPECT_EQ(render("{{ 'ab cd'|capitalize }}|{{ 'ab-cd ef'|title }}|{{ 'a'|upper }}{{ 'B'|lower }}|{{ 'aa'|replace('a', 'b', 1) }}"
                   "|{{ [1, 2, 1, 'A', 'a']|unique|list }}|{{ {'b': 1, 'A': 2}|dictsort }}|{{ {'a': 1}|items|list }}"
                   "|{{ 'x\ny'|indent(2) }}|{{ 'one two'|wordcount }}|{{ [3, 1, 2]|sort }}|{{ '<a>'|safe }}"),
            "Ab cd|Ab-Cd Ef|Ab|ba|[1, 2, 'A']|[('A', 2), ('b', 1)]|[('a', 1)]|x\n  y|2|[1, 2, 3]|<a>");
}

TEST(Jinja, ToJson) {
  json ctx = json::parse(R"({"d": {"b": [1, 2.0, "ü\n\"q\""], "a": null, "t": true, "e": {}}})");
  EXPECT_EQ(render("{{ d|tojson }}", ctx), R"({"b": [1, 2.0, "ü\n\"q\""], "a": null, "t": true, "e": {}})");
  EXPECT_EQ(render("{{ d.b|tojson(indent=2) }}", ctx), "[\n  1,\n  2.0,\n  \"ü\\n\\\"q\\\"\"\n]");
  EXPECT_EQ(render("{{ 'é'|tojson(ensure_ascii=true) }}{{ {'z': 1, 'a': 2}|tojson(sort_keys=true) }}"), "\"\\u00e9\"{\"a\": 2, \"z\": 1}");
  EXPECT_NE(error_of("{{ [1]|map('string')|tojson }}").find("generator is not JSON serializable"), std::string::npos);
}

TEST(Jinja, WhitespaceControl) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(render("  {% if true %}\n  yes\n  {% endif %}\nafter"), "  yes\nafter");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("a\n  {{- 'x' -}}\n  b"), "axb");
  EXPECT_EQ(render("a {#- comment -#} b\n  {# c #}\nd"), "ab\nd");
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(render("{% if true +%}\nx{% endif %}"), "\nx");
  EXPECT_EQ(render("x  {{ 'v' }}  \n"), "x  v  ");  // one trailing newline is dropped
  EXPECT_EQ(render("a\r\nb"), "a\nb");
}

TEST(Jinja, UndefinedBehavesLikeJinja2) {
  EXPECT_EQ(render("[{{ nope }}]{{ nope is defined }}{% if nope %}x{% endif %}{% for a in nope %}y{% endfor %}{{ nope|length }}"),
            "[]False0");
  EXPECT_EQ(render("{{ d.missing }}|{{ d['missing'] is defined }}|{{ none.x }}", {{"d", json::object()}}), "|False|");
  std::string e = error_of("line one\n{{ nope.attr }}");
  EXPECT_NE(e.find("test.jinja: line 2: 'nope' is undefined"), std::string::npos) << e;
}

TEST(Jinja, RaiseExceptionAndStrftime) {
  std::string e = error_of("{% if messages[0].role == 'system' %}\n{{ raise_exception('System role not supported') }}{% endif %}", kChat);
  EXPECT_NE(e.find("test.jinja: line 2:"), std::string::npos) << e;
  EXPECT_NE(e.find("System role not supported"), std::string::npos) << e;
  RenderOptions opt;
  opt.strftime_now_fixed = "2024-07-26";
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y %A') }}", json::object(), opt), "26 Jul 2024 Friday");
}

TEST(Jinja, ErrorsNameLineAndConstruct) {
  std::string e = error_of("ok\n\n{% include 'x.jinja' %}");
  EXPECT_NE(e.find("test.jinja: line 3: unsupported template construct: '{% include %}'"), std::string::npos) << e;
  e = error_of("{{ x|frobnicate }}");
  EXPECT_NE(e.find("unsupported template construct: filter 'frobnicate'"), std::string::npos) << e;
  e = error_of("a\n{% if x %}never closed");
  EXPECT_NE(e.find("line 2: template syntax error: unexpected end of template, expected 'endif'"), std::string::npos) << e;
  e = error_of("{{ 1 + }}");
  EXPECT_NE(e.find("template syntax error"), std::string::npos) << e;
  e = error_of("{% endfor %}");
  EXPECT_NE(e.find("unknown statement 'endfor'"), std::string::npos) << e;
  e = error_of("{{ 'É'.isupper() }}");
  EXPECT_NE(e.find("unsupported template construct: str.isupper() of non-ASCII text"), std::string::npos) << e;
  // A sandbox reads no files: include, import, extends stay refused, by name and line.
  for (const char* stmt : {"include", "import", "extends", "from"}) {
    e = error_of(std::string("a\n{% ") + stmt + " 'x.jinja' %}");
    EXPECT_NE(e.find(std::string("line 2: unsupported template construct: '{% ") + stmt + " %}'"), std::string::npos) << e;
  }
  e = error_of("{{ '%a' % 'é' }}");
  EXPECT_NE(e.find("unsupported template construct: '%a' formatting"), std::string::npos) << e;
  e = error_of("{{ [1]|map('string') }}");
  EXPECT_NE(e.find("unsupported template construct: printing a generator"), std::string::npos) << e;
}

// Python's full case mappings (jinja2 calls str.upper/lower/title/capitalize): ß -> SS,
// final sigma, title-case digraphs, Cyrillic, Greek with diacritics; expected strings from jinja2.
TEST(Jinja, CaseMappingBeyondAscii) {
  EXPECT_EQ(render("{{ 'straße ǆemal ŉ'|upper }}"), "STRASSE ǄEMAL ʼN");
  EXPECT_EQ(render("{{ 'ΟΔΥΣΣΕΥΣ Σ ΑΣ.'|lower }}"), "οδυσσευς σ ας.");
  EXPECT_EQ(render("{{ 'ÉCOLE ПРИВЕТ İ'.lower() }}"), "école привет i̇");
  // the title filter upper-cases each word's first letter; str.title title-cases it
  EXPECT_EQ(render("{{ 'ǆemal ßtraße ﬁx élan-vital «ôté» ὒ'|title }}"), "Ǆemal SStraße FIx Élan-Vital «ôté» Υ̓̀");
  EXPECT_EQ(render("{{ 'ǆemal ßtraße élan-vital «ôté» ΑΣ Σ'.title() }}"), "ǅemal Sstraße Élan-Vital «Ôté» Ας Σ");
  EXPECT_EQ(render("{{ 'ǆemal ÉCOLE'|capitalize }} {{ 'ßa'.capitalize() }}"), "ǅemal école Ssa");
  // a letter that is its own title case, though its upper case differs (Greek with
  // prosgegrammeni, Georgian Mkhedruli)
  EXPECT_EQ(render("{{ 'ᾁ ᾉ აბ'.title() }}|{{ 'ᾉ'|upper }}"), "ᾉ ᾉ აბ|ἉΙ");
  EXPECT_EQ(render("{{ ['B', 'a', 'É', 'é']|sort }}"), "['a', 'B', 'É', 'é']");  // case-insensitive: str.lower
}

// str % args as Python formats it; expected strings from jinja2.
TEST(Jinja, PercentFormatting) {
  EXPECT_EQ(render("{{ '%s and %d%%' % ('café', 42) }}"), "café and 42%");
  EXPECT_EQ(render("{{ '%5.1f|%-6s|%+d|%05d|%x|%#o|%X' % (2.25, 'ab', 3, -42, 255, 8, -255) }}"),
            "  2.2|ab    |+3|-0042|ff|0o10|-FF");
  EXPECT_EQ(render("{{ '%r %s %r' % ('it\\'s', none, [1, 'a']) }}"), "\"it's\" None [1, 'a']");
  EXPECT_EQ(render("{{ '%(name)s is %(age)d' % {'name': 'Zoë', 'age': 7.9} }}"), "Zoë is 7");
  EXPECT_EQ(render("{{ 'Hi %s!' % messages[1].role }}", kChat), "Hi user!");
  EXPECT_EQ(render("{{ '%.2s|%5s|%c%c|%e|%g|%G' % ('héllo', 'é', 97, 'ü', 12345.678, 0.00001, 1e20) }}"),
            "hé|    é|aü|1.234568e+04|1e-05|1E+20");
  EXPECT_EQ(render("{{ '%*d|%-*d|%.*f' % (5, 42, 4, 7, 2, 3.14159) }}"), "   42|7   |3.14");
  EXPECT_EQ(render("{{ 'x' % {'a': 1} }}{{ '%s' % {'a': 1} }}{{ 'y' % [] }}{{ '%s' % ((1, 2),) }}"), "x{'a': 1}y(1, 2)");
  EXPECT_EQ(render("{{ 7 % 3 }} {{ -7 % 3 }}"), "1 2");  // still modulo on numbers
  // jinja2 raises for each of these (TypeError / ValueError)
  EXPECT_NE(error_of("{{ '%s %s' % ('a',) }}").find("not enough arguments for format string"), std::string::npos);
  EXPECT_NE(error_of("{{ '%s' % ('a', 'b') }}").find("not all arguments converted"), std::string::npos);
  EXPECT_NE(error_of("{{ 'x' % 5 }}").find("not all arguments converted"), std::string::npos);
  EXPECT_NE(error_of("{{ '%d' % 'x' }}").find("%d format: a real number is required, not str"), std::string::npos);
  EXPECT_NE(error_of("{{ '%z' % 1 }}").find("unsupported format character 'z' (0x7a) at index 1"), std::string::npos);
  EXPECT_NE(error_of("{{ '%' % () }}").find("incomplete format"), std::string::npos);
}

// jinja2's groupby: sorted by the attribute, (grouper, list) tuples; expected strings from jinja2.
// Non-string keys are held tagged with a leading \x1f; a string key that itself starts with
// one (from the template or a message's JSON) stays a string (fuzz.jinja found dictsort
// reading such a key as a number and throwing).
TEST(Jinja, StringKeysStartingWithTheKeyTagStayStrings) {
  EXPECT_EQ(render("{% for k, v in {'b': 2, '\x1f.': 1}|dictsort %}[{{ k }}={{ v }}]{% endfor %}"), "[\x1f.=1][b=2]");
  EXPECT_EQ(render("{% for k, v in {3: 4, 1: 2}|dictsort %}[{{ k + 1 }}]{% endfor %}"), "[2][4]");
  const json ctx = {{"d", {{"\x1fi3", 5}, {"x", 1}}}};
  EXPECT_EQ(render("{% for k in d %}{{ k|length }}{% endfor %}", ctx), "31");
  EXPECT_EQ(render("{{ d|tojson }}", ctx), R"({"\u001fi3": 5, "x": 1})");
  EXPECT_EQ(render("{{ d['\x1fi3'] }} {{ d[3] is defined }} {{ d.items()|list|first|first|length }}", ctx), "5 False 3");
  EXPECT_EQ(render("{{ '%(\x1fk)s' % {'\x1fk': 7} }}"), "7");
}

TEST(Jinja, GroupBy) {
  const json msgs = json::parse(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                                 {"role": "user", "content": "c"}]})");
  EXPECT_EQ(render("{% for g in messages|groupby('role') %}{{ g.grouper }}:{{ g.list|map(attribute='content')|join(',') }};"
                   "{% endfor %}", msgs),
            "assistant:b;user:a,c;");
  const json mixed = json::parse(R"({"messages": [{"role": "b", "content": "a"}, {"role": "A", "content": "b"},
                                                  {"role": "a", "content": "c"}]})");
  EXPECT_EQ(render("{% for role, items in messages|groupby('role') %}{{ role }}={{ items|length }} {% endfor %}"
                   "{{ messages|groupby('role')|first }}", mixed),
            "A=2 b=1 ('A', [{'role': 'A', 'content': 'b'}, {'role': 'a', 'content': 'c'}])");
  EXPECT_EQ(render("{% for k, v in messages|groupby('role', case_sensitive=true) %}{{ k }}={{ v|length }} {% endfor %}", mixed),
            "A=1 a=1 b=1 ");
  const json nested = json::parse(R"({"messages": [{"n": 1, "meta": {"lang": "fr"}}, {"n": 2, "meta": {}},
                                                   {"n": 3, "meta": {"lang": "de"}}]})");
  EXPECT_EQ(render("{% for k, v in messages|groupby('meta.lang', default='none') %}{{ k }}:{{ v|map(attribute='n')|join }} "
                   "{% endfor %}", nested),
            "de:3 fr:1 none:2 ");
  EXPECT_EQ(render("{% for k, v in [[1, 'a'], [0, 'b'], [1, 'c']]|groupby(0) %}{{ k }}{{ v }} {% endfor %}"),
            "0[[0, 'b']] 1[[1, 'a'], [1, 'c']] ");
}

TEST(Jinja, GenerationBlocks) {
  Template t("{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}</s>"
             "{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}",
             "gen.jinja");
  EXPECT_TRUE(t.has_generation_blocks());
  json ctx = json::parse(R"({"messages": [{"role": "user", "content": "é?"}, {"role": "assistant", "content": "ok"},
                                          {"role": "user", "content": "x"}, {"role": "assistant", "content": "ünï"}]})");
  auto r = t.render(ctx);
  EXPECT_EQ(r.text, "<user>é?<assistant>ok</s><user>x<assistant>ünï</s>");
  ASSERT_EQ(r.generation.size(), 2u);
  EXPECT_EQ(r.text.substr(r.generation[0].first, r.generation[0].second - r.generation[0].first), "ok</s>");
  EXPECT_EQ(r.text.substr(r.generation[1].first, r.generation[1].second - r.generation[1].first), "ünï</s>");
  EXPECT_FALSE(Template("{{ x }}", "t").has_generation_blocks());
}

TEST(Jinja, Bounds) {
  RenderOptions opt;
  opt.max_output_bytes = 100;
  EXPECT_NE(error_of("{% for i in range(1000) %}xxxxxxxxxx{% endfor %}", json::object(), opt).find("output exceeds 100 bytes"),
            std::string::npos);
  EXPECT_NE(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("recursion deeper than 64"), std::string::npos);
  RenderOptions few_steps;
  few_steps.max_steps = 100'000;
  EXPECT_NE(error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", json::object(), few_steps)
                .find("too much work"),
            std::string::npos);
  EXPECT_NE(error_of("{{ range(1000000) }}").find("range too big"), std::string::npos);
  EXPECT_NE(error_of("{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}").find("nesting too deep"), std::string::npos);
  EXPECT_NE(error_of("{{ 9223372036854775807 + 1 }}").find("integer overflow"), std::string::npos);
}

TEST(Jinja, ChatTemplateEndToEnd) {
  // SmolLM2's / ChatML's template, as its tokenizer_config.json writes it.
  const std::string chatml =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
      "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  json ctx = kChat;
  ctx["add_generation_prompt"] = true;
  EXPECT_EQ(render(chatml, ctx),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>assistant\n");
}

}  // namespace
