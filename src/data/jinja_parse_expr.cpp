// The parser's expressions, loosest binding first, as jinja2's parser orders them:
// conditional, or, and, not, comparisons, + -, ~, * / // %, **, unary, filters and tests,
// postfix (attribute, subscript, call), primary.
#include "data/jinja_parser.h"

namespace anvil::data::jinja {

// An expression, or a tuple "a, b" (as jinja2's parse_tuple); with_cond: "x if c else y".
NodePtr Parser::parse_expr_tuple(bool with_cond) {
  NodePtr first = with_cond ? parse_expr() : parse_or();
  if (!is_op(",")) return first;
  auto t = make(NodeKind::tuple);
  t->kids.push_back(first);
  while (skip_op(",")) {
    if (cur().kind == TokenKind::block_end || cur().kind == TokenKind::var_end || is_op(")")) break;
    t->kids.push_back(with_cond ? parse_expr() : parse_or());
  }
  return t;
}

NodePtr Parser::parse_tuple_no_cond() { return parse_expr_tuple(false); }

NodePtr Parser::parse_expr() {
  Guard g(*this);
  NodePtr e = parse_or();
  while (skip_name("if")) {
    auto c = make(NodeKind::cond);
    c->kids.push_back(parse_or());          // condition
    c->kids.push_back(e);                   // then
    c->kids.push_back(skip_name("else") ? parse_expr() : nullptr);
    e = c;
  }
  return e;
}

// "a or b" and "a and b": left-associative, `and` binding tighter.
NodePtr Parser::parse_logic(NodeKind kind, const char* word, NodePtr (Parser::*operand)()) {
  NodePtr l = (this->*operand)();
  while (is_name(word)) {
    auto n = make(kind);
    next();
    n->kids = {l, (this->*operand)()};
    l = n;
  }
  return l;
}

NodePtr Parser::parse_or() { return parse_logic(NodeKind::or_, "or", &Parser::parse_and); }

NodePtr Parser::parse_and() { return parse_logic(NodeKind::and_, "and", &Parser::parse_not); }

NodePtr Parser::parse_not() {
  Guard g(*this);
  if (is_name("not")) {
    auto n = make(NodeKind::not_);
    next();
    n->kids.push_back(parse_not());
    return n;
  }
  return parse_compare();
}

NodePtr Parser::parse_compare() {
  NodePtr first = parse_math1();
  NodePtr n;
  while (true) {
    std::string op;
    if (cur().kind == TokenKind::op &&
        (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
         cur().text == "<=" || cur().text == ">=")) {
      op = cur().text;
      next();
    } else if (is_name("in")) {
      op = "in";
      next();
    } else if (is_name("not") && peek().kind == TokenKind::name && peek().text == "in") {
      op = "not in";
      next();
      next();
    } else {
      break;
    }
    if (!n) {
      n = make(NodeKind::compare);
      n->kids.push_back(first);
    }
    n->ops.push_back(op);
    n->kids.push_back(parse_math1());
  }
  return n ? n : first;
}

NodePtr Parser::binary(const std::string& op, NodePtr l, NodePtr r) {
  auto n = make(NodeKind::binary);
  n->name = op;
  n->kids = {std::move(l), std::move(r)};
  return n;
}

NodePtr Parser::parse_math1() {
  NodePtr l = parse_concat();
  while (is_op("+") || is_op("-")) {
    std::string op = cur().text;
    next();
    l = binary(op, l, parse_concat());
  }
  return l;
}

NodePtr Parser::parse_concat() {
  NodePtr l = parse_math2();
  while (skip_op("~")) l = binary("~", l, parse_math2());
  return l;
}

NodePtr Parser::parse_math2() {
  NodePtr l = parse_pow();
  while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
    std::string op = cur().text;
    next();
    l = binary(op, l, parse_pow());
  }
  return l;
}

NodePtr Parser::parse_pow() {
  NodePtr l = parse_unary(true);
  while (skip_op("**")) l = binary("**", l, parse_unary(true));
  return l;
}

NodePtr Parser::parse_unary(bool with_filter) {
  Guard g(*this);
  NodePtr n;
  if (is_op("-") || is_op("+")) {
    n = make(NodeKind::unary);
    n->name = cur().text;
    next();
    n->kids.push_back(parse_unary(false));
  } else {
    n = parse_postfix(parse_primary());
  }
  return with_filter ? parse_filters(n) : n;
}

NodePtr Parser::parse_primary() {
  const Token& t = cur();
  NodePtr n;
  if (t.kind == TokenKind::name) {
    n = make(NodeKind::literal);
    if (t.text == "true" || t.text == "True") n->literal = Value::boolean(true);
    else if (t.text == "false" || t.text == "False") n->literal = Value::boolean(false);
    else if (t.text == "none" || t.text == "None") n->literal = Value::none();
    else {
      n->kind = NodeKind::name;
      n->name = t.text;
    }
    next();
  } else if (t.kind == TokenKind::string) {
    std::string s;
    while (cur().kind == TokenKind::string) {  // adjacent literals concatenate
      s += cur().text;
      next();
    }
    n = make(NodeKind::literal);
    n->literal = Value::string(std::move(s));
  } else if (t.kind == TokenKind::integer || t.kind == TokenKind::floating) {
    n = make(NodeKind::literal);
    n->literal = t.number;
    next();
  } else if (skip_op("(")) {
    if (skip_op(")")) {
      n = make(NodeKind::tuple);
      return n;
    }
    n = parse_expr();
    if (is_op(",")) {
      auto tup = make(NodeKind::tuple);
      tup->kids.push_back(n);
      while (skip_op(",")) {
        if (is_op(")")) break;
        tup->kids.push_back(parse_expr());
      }
      n = tup;
    }
    expect_op(")");
  } else if (skip_op("[")) {
    n = make(NodeKind::list);
    while (!skip_op("]")) {
      if (!n->kids.empty()) expect_op(",");
      if (skip_op("]")) break;
      n->kids.push_back(parse_expr());
    }
  } else if (skip_op("{")) {
    n = make(NodeKind::dict);
    while (!skip_op("}")) {
      if (!n->kids.empty()) expect_op(",");
      if (skip_op("}")) break;
      n->kids.push_back(parse_expr());
      expect_op(":");
      n->kids.push_back(parse_expr());
    }
  } else {
    fail("unexpected '" + describe() + "'");
  }
  return n;
}

NodePtr Parser::parse_postfix(NodePtr n) {
  while (true) {
    if (skip_op(".")) {
      auto a = make(NodeKind::getattr);
      if (cur().kind == TokenKind::name) {
        a->name = cur().text;
      } else if (cur().kind == TokenKind::integer) {
        a->kind = NodeKind::getitem;  // x.0 is x[0]
        auto lit = make(NodeKind::literal);
        lit->literal = cur().number;
        a->kids.push_back(n);
        a->kids.push_back(lit);
        next();
        n = a;
        continue;
      } else {
        fail("expected an attribute name after '.'");
      }
      next();
      a->kids.push_back(n);
      n = a;
    } else if (skip_op("[")) {
      n = parse_subscript(n);
    } else if (is_op("(")) {
      n = parse_call(n);
    } else {
      return n;
    }
  }
}

NodePtr Parser::parse_subscript(NodePtr target) {
  NodePtr parts[3];
  int colons = 0;
  bool any = false;
  while (!is_op("]")) {
    if (skip_op(":")) {
      if (++colons > 2) fail("too many ':' in subscript");
      continue;
    }
    if (parts[colons]) fail("expected ':' or ']' in subscript");
    parts[colons] = parse_expr();
    any = true;
  }
  next();
  if (colons == 0) {
    if (!any) fail("empty subscript");
    auto n = make(NodeKind::getitem);
    n->kids = {target, parts[0]};
    return n;
  }
  auto n = make(NodeKind::slice);
  n->kids = {target, parts[0], parts[1], parts[2]};
  return n;
}

// "(args, key=value)" onto `n` (a call node with the callee as kids[0]).
void Parser::parse_args(Node& n) {
  expect_op("(");
  while (!skip_op(")")) {
    if (n.kids.size() > 1 || !n.kwargs.empty()) expect_op(",");
    if (skip_op(")")) break;
    if (is_op("*") || is_op("**")) unsupported("'*args' / '**kwargs' in a call");
    if (cur().kind == TokenKind::name && peek().kind == TokenKind::op && peek().text == "=") {
      std::string k = cur().text;
      next();
      next();
      n.kwargs.emplace_back(k, parse_expr());
    } else {
      if (!n.kwargs.empty()) fail("positional argument after keyword argument");
      n.kids.push_back(parse_expr());
    }
  }
}

NodePtr Parser::parse_call(NodePtr callee) {
  auto n = make(NodeKind::call);
  n->kids.push_back(callee);
  parse_args(*n);
  return n;
}

// "| filter(args)" and "is [not] test args" after `n` (nullptr: a filter block's input).
NodePtr Parser::parse_filters(NodePtr n, bool allow_tests) {
  while (true) {
    if (skip_op("|") || (!n && cur().kind == TokenKind::name)) {
      auto f = make(NodeKind::filter);
      f->name = expect_name();
      while (skip_op(".")) f->name += "." + expect_name();
      f->kids.push_back(n);
      if (is_op("(")) parse_args(*f);
      n = f;
    } else if (allow_tests && is_name("is")) {
      next();
      auto t = make(NodeKind::test);
      t->flag = skip_name("not");
      t->name = expect_name();
      t->kids.push_back(n);
      if (is_op("(")) {
        parse_args(*t);
      } else if ((cur().kind == TokenKind::name && cur().text != "else" && cur().text != "or" &&
                  cur().text != "and" && cur().text != "if" && cur().text != "is" && cur().text != "in" &&
                  cur().text != "not" && cur().text != "recursive") ||
                 cur().kind == TokenKind::string || cur().kind == TokenKind::integer ||
                 cur().kind == TokenKind::floating || is_op("[") || is_op("{")) {
        t->kids.push_back(parse_postfix(parse_primary()));  // "is divisibleby 3"
      }
      n = t;
    } else if (is_op("(") && n && n->kind == NodeKind::filter) {
      n = parse_call(n);
    } else {
      return n;
    }
  }
}

}  // namespace anvil::data::jinja
