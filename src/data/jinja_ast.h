// The parsed form of a template: one Node type for statements and expressions (a tree
// walked by jinja_eval.cpp), and the lexer's token stream it is parsed from.
#pragma once

#include "data/jinja_value.h"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace anvil::data::jinja {

enum class TokenKind { text, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct Token {
  TokenKind kind;
  std::string text;  // the text, name, operator or decoded string literal
  Value number;
  int line;
};

// Whitespace control (trim_blocks, lstrip_blocks, -, +), comments and {% raw %} are
// resolved here, so text tokens carry exactly the characters that are output.
std::vector<Token> lex_template(std::string_view source, const std::string& where);

enum class NodeKind {
  // statements
  text, output, if_, for_, set, set_block, macro, call_block, filter_block, break_, continue_, generation,
  // expressions
  literal, name, getattr, getitem, slice, call, filter, test, unary, binary, and_, or_, not_, cond,
  list, tuple, dict, compare,
};

struct Node;
using NodePtr = std::shared_ptr<Node>;

struct Node {
  NodeKind kind;
  int line = 0;
  std::string name;                // name, attribute, operator, filter/test name, macro name, text
  Value literal;                   // literal
  std::vector<NodePtr> kids;       // operands; for dict: key, value, key, value...
  std::vector<std::pair<std::string, NodePtr>> kwargs;  // call/filter/test keyword arguments
  std::vector<std::string> ops;    // compare: one operator between each pair of kids
  std::vector<std::string> targets;  // for/set: the names assigned; macro/call: parameters
  std::vector<NodePtr> defaults;   // macro/call parameters' defaults (nullptr: none)
  std::vector<NodePtr> body, else_body;
  bool flag = false;               // test: negated; for: recursive; set: namespace attribute
};

struct Parsed {
  std::vector<NodePtr> body;
  bool has_generation = false;
};
Parsed parse_template(std::string_view source, const std::string& where);

}  // namespace anvil::data::jinja
