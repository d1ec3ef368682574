#!/usr/bin/env python3
"""Writes the Jinja fuzzing seeds into OUT_DIR: anvil's three chat layouts (as
tests/e2e/test_chat_template.py writes them) and templates that exercise each construct
(standard library only)."""
import ast
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CONSTRUCTS = {
    "loops": "{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m['content'] | trim }}"
             "{% if loop.last %}.{% endif %}{% else %}none{% endfor %}",
    "namespace": "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                 "{% if ns.n > 2 %}{% break %}{% endif %}{% endfor %}{{ ns.n }}",
    # Found by the fuzzer: a namespace assigned into itself (a reference cycle, now refused).
    "namespace_cycle": "{% set ns = namespace(nz=0) %}{% for m in messages %}{% set ns.n = ns %}"
                       "{% if ns+n > 2 %}{% break %}{% endif %}{% endfor %}{{ ns.n }}",
    "macro": "{% macro r(x, d=1) %}[{{ x }}{{ caller() if caller is defined }}]{% endmacro %}"
             "{{ r('a') }}{% call r('b', d=2) %}c{% endcall %}",
    "tools": "{%- if tools %}{{ tools | tojson(indent=2) }}{% endif %}{%- for m in messages %}"
             "{%- for c in m.tool_calls | default([]) %}{{ c.function.name }}({{ c.function.arguments | tojson }})"
             "{%- endfor %}{% endfor %}",
    "filters": "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(', ') }}"
               "{{ messages | length }}{{ 'a,b'.split(',') | list }}{{ {'b': 1, 'a': 2} | dictsort }}",
    "expressions": "{{ (1 + 2) * 3 // 2 % 5 ** 2 }}{{ 'x' ~ none }}{{ [1, 2, 3][::-1] }}{{ 'abc'[1:] }}"
                   "{{ 1 if x is defined else 2 }}{{ 'a' in 'abc' and not false }}",
    "whitespace": "  {%- if true -%}\n  a\n  {%+ if true %}b{% endif +%}\n{# c #}\n{{- ' d ' -}}\n{% raw %}{{ e }}{% endraw %}",
    "recursive": "{% for m in messages recursive %}{{ m.role }}{% if m.tool_calls %}{{ loop(m.tool_calls) }}{% endif %}{% endfor %}",
    "generation": "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{{ eos_token }}"
                  "{% endgeneration %}{% endif %}{% endfor %}{{ strftime_now('%d %b %Y') }}",
    "percent": "{{ '%-5s|%+05d|%#x|%.2f|%(k)r|%*d|%c%%' % ('é', 3, 255, 2.5, 7, 'x') }}{{ '%(k)s' % {'k': 1} }}",
    "groupby": "{% for g, items in messages|groupby('role', case_sensitive=true) %}{{ g }}{{ items|length }}{% endfor %}"
               "{% for g in messages|groupby('x.y', default='-') %}{{ g.grouper }}{{ g.list }}{% endfor %}",
    "case": "{{ 'straße ΣΑΣ ǆ ᾁ'|upper }}{{ 'ΟΔΟΣ.'|lower }}{{ 'ǆemal élan'|title }}{{ 'ßx'.capitalize() }}{{ 'ᾁ ა'.title() }}",
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = dict(CONSTRUCTS)
    tree = ast.parse(open(os.path.join(HERE, "..", "e2e", "test_chat_template.py"), encoding="utf-8").read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "TEMPLATES":
            seeds.update(ast.literal_eval(node.value))
    for name, text in seeds.items():
        with open(os.path.join(out, name + ".jinja"), "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
