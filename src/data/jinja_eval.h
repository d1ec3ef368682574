// The renderer's state while one render runs: scopes, output buffers, bounds. Statements
// and expressions are evaluated in jinja_eval.cpp; filters, tests, methods and globals in
// jinja_filters.cpp.
#pragma once

#include "data/jinja.h"
#include "data/jinja_ast.h"

#include <memory>
#include <string>
#include <vector>

namespace anvil::data::jinja {

// Variables of one frame: the template, a loop iteration, a macro call. Lookups walk to
// the parent; assignments stay in the frame (jinja2's scoping).
struct Scope {
  Dict vars;
  std::shared_ptr<Scope> parent;
};
using ScopePtr = std::shared_ptr<Scope>;

class Renderer {
 public:
  Renderer(const std::string& where, const RenderOptions& opt, Rendered& out, const Value& context);
  void run(const std::vector<NodePtr>& body);

  [[noreturn]] void fail(int line, const std::string& what) const;
  Value call(const Value& callee, CallArgs& args, int line);
  Value filter(const std::string& name, const Value& v, CallArgs& args, int line);
  bool test(const std::string& name, const Value& v, CallArgs& args, int line);
  // A method of a str, list or dict (s.strip, d.items, ...) bound to `obj`; undefined when
  // the type has no such method.
  Value method(const Value& obj, const std::string& name, int line);
  Value global(const std::string& name) const;
  Value getattr(const Value& obj, const std::string& name, int line);
  Value getitem(const Value& obj, const Value& key, int line);
  // Errors out on an undefined value where jinja2's Undefined would raise.
  void check_defined(const Value& v, int line) const;
  // The items a for loop or a filter walks: a list's, a dict's keys, a string's characters,
  // nothing for Undefined. A generator can be walked once.
  List iterate(const Value& v, int line);
  // str(v) where the text is output; refuses what Python would print as "<generator ...>".
  std::string str(const Value& v, int line) const;
  void charge(std::size_t steps, int line);
  std::size_t max_output() const { return opt_.max_output_bytes; }
  const RenderOptions& options() const { return opt_; }

 private:
  enum class Flow { normal, break_, continue_ };
  Flow exec(const std::vector<NodePtr>& body, const ScopePtr& scope);
  Flow exec_for(const Node& n, const ScopePtr& scope);
  void loop_body(const Node& n, const ScopePtr& scope, const Value& items, int depth);
  void exec_set(const Node& n, const ScopePtr& scope, Value v);
  Value make_macro(const Node& n, const ScopePtr& scope);
  std::string capture(const std::vector<NodePtr>& body, const ScopePtr& scope);
  void emit(const std::string& s, int line);
  Value eval(const Node& n, const ScopePtr& scope);
  Value eval_binary(const Node& n, const Value& a, const Value& b);
  Value eval_compare(const Node& n, const ScopePtr& scope);
  Value eval_slice(const Node& n, const ScopePtr& scope);
  Value lookup(const std::string& name, const ScopePtr& scope) const;
  void eval_args(const Node& n, std::size_t first, const ScopePtr& scope, CallArgs& args);

  const std::string& where_;
  const RenderOptions& opt_;
  Rendered& out_;
  Value context_;
  std::string* sink_;  // where output goes: out_.text, or a capture (macro, set block, filter)
  std::size_t captured_bytes_ = 0;  // held in open captures, counted against the bound
  int depth_ = 0;
  std::size_t steps_ = 0;
  Value filter_input_;  // the text a {% filter %} block hands its filter chain
};

}  // namespace anvil::data::jinja
