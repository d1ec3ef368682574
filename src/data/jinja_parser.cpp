// The parser: jinja2's grammar and operator precedence, for the statements chat templates
// use. A statement jinja2 has but this renderer does not (extends, include, import, block,
// with, do, ...) is refused by name here, before anything renders.
#include "data/jinja_ast.h"

#include "core/error.h"

namespace anvil::data::jinja {
namespace {

constexpr int kMaxParseDepth = 200;  // nested expressions/blocks: the fuzzer's stack guard

class Parser {
 public:
  Parser(std::vector<Token> toks, const std::string& where) : t_(std::move(toks)), where_(where) {}

  Parsed run() {
    Parsed p;
    p.body = parse_body({});
    if (cur().kind != TokenKind::eof) fail("unexpected '" + cur().text + "'");
    p.has_generation = has_generation_;
    return p;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw_user_error(where_, ": line ", cur().line, ": template syntax error: ", what);
  }
  [[noreturn]] void unsupported(const std::string& what) {
    throw_user_error(where_, ": line ", cur().line, ": unsupported template construct: ", what);
  }
  const Token& cur() const { return t_[i_]; }
  const Token& peek(std::size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  void next() { if (i_ + 1 < t_.size()) ++i_; }
  bool is_op(const char* op) const { return cur().kind == TokenKind::op && cur().text == op; }
  bool is_name(const char* n) const { return cur().kind == TokenKind::name && cur().text == n; }
  bool skip_op(const char* op) { return is_op(op) ? (next(), true) : false; }
  bool skip_name(const char* n) { return is_name(n) ? (next(), true) : false; }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected '") + op + "', got '" + describe() + "'");
  }
  std::string expect_name() {
    if (cur().kind != TokenKind::name) fail("expected a name, got '" + describe() + "'");
    std::string n = cur().text;
    next();
    return n;
  }
  void expect_block_end() {
    if (cur().kind != TokenKind::block_end) fail("expected end of statement '%}', got '" + describe() + "'");
    next();
  }
  std::string describe() const {
    switch (cur().kind) {
      case TokenKind::eof: return "end of template";
      case TokenKind::block_end: return "%}";
      case TokenKind::var_end: return "}}";
      default: return cur().text;
    }
  }
  NodePtr make(NodeKind k) {
    auto n = std::make_shared<Node>();
    n->kind = k;
    n->line = cur().line;
    return n;
  }
  struct Guard {
    Parser& p;
    explicit Guard(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxParseDepth) p.fail("nesting too deep");
    }
    ~Guard() { --p.depth_; }
  };

  // Statements until one of `ends` ({% name %}) is next; leaves the parser on that name.
  std::vector<NodePtr> parse_body(const std::vector<std::string>& ends) {
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

  NodePtr parse_statement() {
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
  void end_block(const char* name) {
    if (!skip_name(name)) fail(std::string("expected '") + name + "'");
    expect_block_end();
  }

  NodePtr parse_if() {
    auto n = make(NodeKind::if_);
    next();
    n->kids.push_back(parse_expr_tuple(false));
    expect_block_end();
    n->body = parse_body({"elif", "else", "endif"});
    if (is_name("elif")) {
      n->else_body.push_back(parse_if());  // the nested if consumes the endif
      return n;
    }
    if (skip_name("else")) {
      expect_block_end();
      n->else_body = parse_body({"endif"});
    }
    end_block("endif");
    return n;
  }

  NodePtr parse_for() {
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
    if (skip_name("else")) {
      expect_block_end();
      n->else_body = parse_body({"endfor"});
    }
    end_block("endfor");
    return n;
  }

  NodePtr parse_set() {
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
  void parse_params(Node& n) {
    expect_op("(");
    while (!skip_op(")")) {
      if (!n.targets.empty()) expect_op(",");
      if (skip_op(")")) break;
      n.targets.push_back(expect_name());
      n.defaults.push_back(skip_op("=") ? parse_expr() : nullptr);
    }
  }

  NodePtr parse_macro() {
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

  NodePtr parse_call_block() {
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

  NodePtr parse_filter_block() {
    auto n = make(NodeKind::filter_block);
    next();
    n->kids.push_back(parse_filters(nullptr, false));
    expect_block_end();
    n->body = parse_body({"endfilter"});
    end_block("endfilter");
    return n;
  }

  NodePtr parse_generation() {
    auto n = make(NodeKind::generation);
    next();
    expect_block_end();
    has_generation_ = true;
    n->body = parse_body({"endgeneration"});
    end_block("endgeneration");
    return n;
  }

  // ---- expressions, loosest binding first ----

  // An expression, or a tuple "a, b" (as jinja2's parse_tuple); with_cond: "x if c else y".
  NodePtr parse_expr_tuple(bool with_cond) {
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
  NodePtr parse_tuple_no_cond() { return parse_expr_tuple(false); }

  NodePtr parse_expr() {
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

  NodePtr parse_or() {
    NodePtr l = parse_and();
    while (is_name("or")) {
      auto n = make(NodeKind::or_);
      next();
      n->kids = {l, parse_and()};
      l = n;
    }
    return l;
  }
  NodePtr parse_and() {
    NodePtr l = parse_not();
    while (is_name("and")) {
      auto n = make(NodeKind::and_);
      next();
      n->kids = {l, parse_not()};
      l = n;
    }
    return l;
  }
  NodePtr parse_not() {
    Guard g(*this);
    if (is_name("not")) {
      auto n = make(NodeKind::not_);
      next();
      n->kids.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }
  NodePtr parse_compare() {
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
  NodePtr binary(const std::string& op, NodePtr l, NodePtr r) {
    auto n = make(NodeKind::binary);
    n->name = op;
    n->kids = {std::move(l), std::move(r)};
    return n;
  }
  NodePtr parse_math1() {
    NodePtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().text;
      next();
      l = binary(op, l, parse_concat());
    }
    return l;
  }
  NodePtr parse_concat() {
    NodePtr l = parse_math2();
    while (skip_op("~")) l = binary("~", l, parse_math2());
    return l;
  }
  NodePtr parse_math2() {
    NodePtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().text;
      next();
      l = binary(op, l, parse_pow());
    }
    return l;
  }
  NodePtr parse_pow() {
    NodePtr l = parse_unary(true);
    while (skip_op("**")) l = binary("**", l, parse_unary(true));
    return l;
  }
  NodePtr parse_unary(bool with_filter) {
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

  NodePtr parse_primary() {
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

  NodePtr parse_postfix(NodePtr n) {
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

  NodePtr parse_subscript(NodePtr target) {
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
  void parse_args(Node& n) {
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

  NodePtr parse_call(NodePtr callee) {
    auto n = make(NodeKind::call);
    n->kids.push_back(callee);
    parse_args(*n);
    return n;
  }

  // "| filter(args)" and "is [not] test args" after `n` (nullptr: a filter block's input).
  NodePtr parse_filters(NodePtr n, bool allow_tests = true) {
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

  std::vector<Token> t_;
  const std::string& where_;
  std::size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  bool has_generation_ = false;
};

}  // namespace

Parsed parse_template(std::string_view source, const std::string& where) {
  return Parser(lex_template(source, where), where).run();
}

}  // namespace anvil::data::jinja
