// The parser's statements: jinja2's, for those chat templates use. A statement jinja2 has
// but this renderer does not (extends, include, import, block, with, do, ...) is refused by
// name here, before anything renders.
#include "data/jinja_parser.h"

namespace anvil::data::jinja {

Parsed Parser::run() {
  Parsed p;
  p.body = parse_body({});
  if (cur().kind != TokenKind::eof) fail("unexpected '" + cur().text + "'");
  p.has_generation = has_generation_;
  return p;
}

// Statements until one of `ends` ({% name %}) is next; leaves the parser on that name.
std::vector<NodePtr> Parser::parse_body(const std::vector<std::string>& ends) {
  Guard g(*this);
  std::vector<NodePtr> body;
  while (true) {
    const Token& t = cur();
    if (t.kind == TokenKind::eof) {
      if (!ends.empty()) fail("unexpected end of template, expected '" + ends.back() + "'");
      return body;
    }
    if (t.kind == TokenKind::text) {
      auto n = make(NodeKind::text);
      n->name = t.text;
      body.push_back(n);
      next();
    } else if (t.kind == TokenKind::var_begin) {
      next();
      auto n = make(NodeKind::output);
      n->kids.push_back(parse_expr_tuple(true));
      if (cur().kind != TokenKind::var_end) fail("expected '}}', got '" + describe() + "'");
      next();
      body.push_back(n);
    } else if (t.kind == TokenKind::block_begin) {
      next();
      if (cur().kind == TokenKind::name) {
        for (const auto& e : ends) {
          if (cur().text == e) return body;
        }
      }
      body.push_back(parse_statement());
    } else {
      fail("unexpected '" + describe() + "'");
    }
  }
}

NodePtr Parser::parse_statement() {
  if (cur().kind != TokenKind::name) fail("expected a statement name, got '" + describe() + "'");
  std::string kw = cur().text;
  if (kw == "if") return parse_if();
  if (kw == "for") return parse_for();
  if (kw == "set") return parse_set();
  if (kw == "macro") return parse_macro();
  if (kw == "call") return parse_call_block();
  if (kw == "filter") return parse_filter_block();
  if (kw == "generation") return parse_generation();
  if (kw == "break" || kw == "continue") {
    auto n = make(kw == "break" ? NodeKind::break_ : NodeKind::continue_);
    if (loop_depth_ == 0) fail("'" + kw + "' outside of a loop");
    next();
    expect_block_end();
    return n;
  }
  static const char* known[] = {"extends", "block", "include", "import", "from", "with", "do", "autoescape",
                                "trans", "pluralize", "debug"};
  for (const char* k : known) {
    if (kw == k) unsupported("'{% " + kw + " %}'");
  }
  fail("unknown statement '" + kw + "' (or a block end without its start)");
}

// Parses "{% end<name> %}" (the parser stands on the name).
void Parser::end_block(const char* name) {
  if (!skip_name(name)) fail(std::string("expected '") + name + "'");
  expect_block_end();
}

// "{% else %}...{% end %}" or just "{% end %}" (the parser stands on "else" or the end).
void Parser::parse_else_and_end(Node& n, const char* end) {
  if (skip_name("else")) {
    expect_block_end();
    n.else_body = parse_body({end});
  }
  end_block(end);
}

NodePtr Parser::parse_if() {
  auto n = make(NodeKind::if_);
  next();
  n->kids.push_back(parse_expr_tuple(false));
  expect_block_end();
  n->body = parse_body({"elif", "else", "endif"});
  if (is_name("elif")) {
    n->else_body.push_back(parse_if());  // the nested if consumes the endif
    return n;
  }
  parse_else_and_end(*n, "endif");
  return n;
}

NodePtr Parser::parse_for() {
  auto n = make(NodeKind::for_);
  next();
  do {
    n->targets.push_back(expect_name());
  } while (skip_op(","));
  if (!skip_name("in")) fail("expected 'in' in for loop");
  n->kids.push_back(parse_tuple_no_cond());
  n->kids.push_back(nullptr);
  if (skip_name("if")) n->kids[1] = parse_expr_tuple(false);
  if (skip_name("recursive")) n->flag = true;
  expect_block_end();
  ++loop_depth_;
  n->body = parse_body({"else", "endfor"});
  --loop_depth_;
  parse_else_and_end(*n, "endfor");
  return n;
}

NodePtr Parser::parse_set() {
  auto n = make(NodeKind::set);
  next();
  std::string first = expect_name();
  if (skip_op(".")) {  // {% set ns.attr = value %}
    n->flag = true;
    n->targets = {first, expect_name()};
  } else {
    n->targets.push_back(first);
    while (skip_op(",")) n->targets.push_back(expect_name());
  }
  if (skip_op("=")) {
    n->kids.push_back(parse_expr_tuple(true));
    expect_block_end();
    return n;
  }
  if (n->flag || n->targets.size() != 1) fail("expected '=' in set");
  n->kind = NodeKind::set_block;
  n->kids.push_back(nullptr);
  if (is_op("|")) n->kids[0] = parse_filters(nullptr);
  expect_block_end();
  n->body = parse_body({"endset"});
  end_block("endset");
  return n;
}

// "(a, b=default, ...)" of a macro or of a call block's caller.
void Parser::parse_params(Node& n) {
  expect_op("(");
  while (!skip_op(")")) {
    if (!n.targets.empty()) expect_op(",");
    if (skip_op(")")) break;
    n.targets.push_back(expect_name());
    n.defaults.push_back(skip_op("=") ? parse_expr() : nullptr);
  }
}

NodePtr Parser::parse_macro() {
  auto n = make(NodeKind::macro);
  next();
  n->name = expect_name();
  parse_params(*n);
  expect_block_end();
  int saved = loop_depth_;
  loop_depth_ = 0;
  n->body = parse_body({"endmacro"});
  loop_depth_ = saved;
  end_block("endmacro");
  return n;
}

NodePtr Parser::parse_call_block() {
  auto n = make(NodeKind::call_block);
  next();
  if (is_op("(")) parse_params(*n);
  NodePtr call = parse_expr();
  if (call->kind != NodeKind::call) fail("expected a macro call in 'call'");
  n->kids.push_back(call);
  expect_block_end();
  n->body = parse_body({"endcall"});
  end_block("endcall");
  return n;
}

NodePtr Parser::parse_filter_block() {
  auto n = make(NodeKind::filter_block);
  next();
  n->kids.push_back(parse_filters(nullptr, false));
  expect_block_end();
  n->body = parse_body({"endfilter"});
  end_block("endfilter");
  return n;
}

NodePtr Parser::parse_generation() {
  auto n = make(NodeKind::generation);
  next();
  expect_block_end();
  has_generation_ = true;
  n->body = parse_body({"endgeneration"});
  end_block("endgeneration");
  return n;
}

Parsed parse_template(std::string_view source, const std::string& where) {
  return Parser(lex_template(source, where), where).run();
}

}  // namespace anvil::data::jinja
