// The parser's state and its methods: statements are parsed in jinja_parser.cpp,
// expressions in jinja_parse_expr.cpp (jinja2's grammar and operator precedence).
#pragma once

#include "core/error.h"
#include "data/jinja_ast.h"

#include <algorithm>
#include <string>
#include <vector>

namespace anvil::data::jinja {

constexpr int kMaxParseDepth = 200;  // nested expressions/blocks: the fuzzer's stack guard

class Parser {
 public:
  Parser(std::vector<Token> toks, const std::string& where) : t_(std::move(toks)), where_(where) {}

  Parsed run();

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

  // statements (jinja_parser.cpp)
  std::vector<NodePtr> parse_body(const std::vector<std::string>& ends);
  NodePtr parse_statement();
  void end_block(const char* name);
  void parse_else_and_end(Node& n, const char* end);
  NodePtr parse_if();
  NodePtr parse_for();
  NodePtr parse_set();
  void parse_params(Node& n);
  NodePtr parse_macro();
  NodePtr parse_call_block();
  NodePtr parse_filter_block();
  NodePtr parse_generation();

  // expressions, loosest binding first (jinja_parse_expr.cpp)
  NodePtr parse_expr_tuple(bool with_cond);
  NodePtr parse_tuple_no_cond();
  NodePtr parse_expr();
  NodePtr parse_logic(NodeKind kind, const char* word, NodePtr (Parser::*operand)());
  NodePtr parse_or();
  NodePtr parse_and();
  NodePtr parse_not();
  NodePtr parse_compare();
  NodePtr binary(const std::string& op, NodePtr l, NodePtr r);
  NodePtr parse_math1();
  NodePtr parse_concat();
  NodePtr parse_math2();
  NodePtr parse_pow();
  NodePtr parse_unary(bool with_filter);
  NodePtr parse_primary();
  NodePtr parse_postfix(NodePtr n);
  NodePtr parse_subscript(NodePtr target);
  void parse_args(Node& n);
  NodePtr parse_call(NodePtr callee);
  NodePtr parse_filters(NodePtr n, bool allow_tests = true);

  std::vector<Token> t_;
  const std::string& where_;
  std::size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  bool has_generation_ = false;
};

}  // namespace anvil::data::jinja
