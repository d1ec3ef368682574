// Statements and expressions: a tree walk with jinja2's scoping (a loop iteration and a
// macro call are frames; if/set are not) and the bounds that make a template safe to render
// (depth, output bytes, work). Operators and slicing are in jinja_operators.cpp.
#include "data/jinja_eval.h"

#include "core/error.h"

#include <cmath>

namespace anvil::data::jinja {
namespace {

// Whether v holds a namespace or a function anywhere (lists and dicts are immutable, so only
// these can make a value refer back to a namespace).
bool holds_reference(const Value& v, int depth = 0) {
  if (v.kind == Kind::ns || v.kind == Kind::function || v.fn != nullptr) return true;
  if (depth > 64) return true;  // deeper than any template builds: refused rather than walked
  if (v.kind == Kind::list && v.list)
    for (const Value& x : *v.list)
      if (holds_reference(x, depth + 1)) return true;
  if (v.kind == Kind::dict && v.dict)
    for (const auto& kv : *v.dict)
      if (holds_reference(kv.second, depth + 1)) return true;
  return false;
}

}  // namespace

Renderer::Renderer(const std::string& where, const RenderOptions& opt, Rendered& out, const Value& context)
    : where_(where), opt_(opt), out_(out), context_(context), sink_(&out.text) {}

void Renderer::fail(int line, const std::string& what) const {
  throw_user_error(where_, ": line ", line, ": ", what);
}

void Renderer::charge(std::size_t steps, int line) {
  steps_ += steps;
  if (steps_ > opt_.max_steps) fail(line, "template does too much work (more than " + std::to_string(opt_.max_steps) + " steps)");
}

void Renderer::check_defined(const Value& v, int line) const {
  if (v.is_undefined()) fail(line, v.s.empty() ? "value is undefined" : v.s);
}

void Renderer::run(const std::vector<NodePtr>& body) {
  auto top = std::make_shared<Scope>();
  exec(body, top);
}

void Renderer::emit(const std::string& s, int line) {
  if (out_.text.size() + captured_bytes_ + s.size() > opt_.max_output_bytes) {
    fail(line, "output exceeds " + std::to_string(opt_.max_output_bytes) + " bytes");
  }
  if (sink_ != &out_.text) captured_bytes_ += s.size();
  sink_->append(s);
}

std::string Renderer::capture(const std::vector<NodePtr>& body, const ScopePtr& scope) {
  std::string buf;
  std::string* saved = sink_;
  std::size_t saved_bytes = captured_bytes_;
  sink_ = &buf;
  try {
    exec(body, scope);
  } catch (...) {
    sink_ = saved;
    captured_bytes_ = saved_bytes;
    throw;
  }
  sink_ = saved;
  captured_bytes_ = saved_bytes;
  return buf;
}

Renderer::Flow Renderer::exec(const std::vector<NodePtr>& body, const ScopePtr& scope) {
  for (const auto& np : body) {
    const Node& n = *np;
    charge(1, n.line);
    switch (n.kind) {
      case NodeKind::text: emit(n.name, n.line); break;
      case NodeKind::output: emit(str(eval(*n.kids[0], scope), n.line), n.line); break;
      case NodeKind::if_: {
        Flow f = exec(truthy(eval(*n.kids[0], scope)) ? n.body : n.else_body, scope);
        if (f != Flow::normal) return f;
        break;
      }
      case NodeKind::for_: exec_for(n, scope); break;
      case NodeKind::break_: return Flow::break_;
      case NodeKind::continue_: return Flow::continue_;
      case NodeKind::set: exec_set(n, scope, eval(*n.kids[0], scope)); break;
      case NodeKind::set_block: {
        Value v = Value::string(capture(n.body, scope));
        if (n.kids[0]) {
          filter_input_ = v;
          v = eval(*n.kids[0], scope);
        }
        exec_set(n, scope, v);
        break;
      }
      case NodeKind::macro: scope->vars.emplace_back(n.name, make_macro(n, scope)); break;
      case NodeKind::call_block: {
        const Node& call = *n.kids[0];
        Value callee = eval(*call.kids[0], scope);
        CallArgs args;
        args.line = n.line;
        eval_args(call, 1, scope, args);
        args.kw.emplace_back("caller", make_macro(n, scope));
        emit(to_str(this->call(callee, args, n.line)), n.line);
        break;
      }
      case NodeKind::filter_block: {
        filter_input_ = Value::string(capture(n.body, scope));
        emit(to_str(eval(*n.kids[0], scope)), n.line);
        break;
      }
      case NodeKind::generation: {
        // As transformers' AssistantTracker: the block renders, then its range is taken
        // from the length of the template's output so far.
        std::string text = capture(n.body, scope);
        std::size_t begin = out_.text.size();
        out_.generation.emplace_back(begin, begin + text.size());
        emit(text, n.line);
        break;
      }
      default: fail(n.line, "internal: not a statement");
    }
  }
  return Flow::normal;
}

void Renderer::exec_set(const Node& n, const ScopePtr& scope, Value v) {
  auto assign = [&](const std::string& name, Value x) {
    for (auto& [k, old] : scope->vars) {
      if (k == name) {
        old = std::move(x);
        return;
      }
    }
    scope->vars.emplace_back(name, std::move(x));
  };
  if (n.flag) {  // ns.attr = v
    Value target = lookup(n.targets[0], scope);
    if (target.kind != Kind::ns) fail(n.line, "cannot assign attribute on non-namespace object '" + n.targets[0] + "'");
    if (!n.targets[1].empty() && n.targets[1][0] == '_') fail(n.line, "namespace attributes cannot start with '_'");
    // Namespaces are shared and mutable: one holding a namespace (itself, through a list)
    // or a function (which holds its scope) could hold itself, a cycle no one frees.
    if (holds_reference(v)) fail(n.line, "a namespace attribute cannot hold a namespace, macro or loop object");
    for (auto& [k, old] : *target.ns) {
      if (k == n.targets[1]) {
        old = std::move(v);
        return;
      }
    }
    target.ns->emplace_back(n.targets[1], std::move(v));
    return;
  }
  if (n.targets.size() == 1) {
    assign(n.targets[0], std::move(v));
    return;
  }
  if (v.kind != Kind::list || v.list->size() != n.targets.size()) {
    fail(n.line, "cannot unpack " + std::string(kind_name(v.kind)) + " into " + std::to_string(n.targets.size()) + " names");
  }
  for (std::size_t k = 0; k < n.targets.size(); ++k) assign(n.targets[k], (*v.list)[k]);
}

// A macro (or a call block's caller): renders its body in a frame below the one it was
// defined in, with its parameters bound.
Value Renderer::make_macro(const Node& n, const ScopePtr& scope) {
  // The defining frame is held weakly: the macro is stored in it, and a strong reference
  // would keep both alive forever.
  const Node* node = &n;
  std::weak_ptr<Scope> defined_in = scope;
  return Value::function([node, defined_in](Renderer& r, CallArgs& args) -> Value {
    if (r.depth_ >= r.opt_.max_depth) r.fail(node->line, "recursion deeper than " + std::to_string(r.opt_.max_depth));
    auto frame = std::make_shared<Scope>();
    frame->parent = defined_in.lock();
    if (!frame->parent) r.fail(args.line, "macro '" + node->name + "' called after its scope ended");
    if (args.pos.size() > node->targets.size()) r.fail(args.line, "macro '" + node->name + "' takes " + std::to_string(node->targets.size()) + " arguments");
    for (std::size_t k = 0; k < node->targets.size(); ++k) {
      const Value* given = args.get(k, node->targets[k]);
      Value v = given ? *given : node->defaults[k] ? r.eval(*node->defaults[k], frame) : Value::undefined("'" + node->targets[k] + "' is undefined");
      frame->vars.emplace_back(node->targets[k], v);
    }
    for (const auto& [k, v] : args.kw) {
      bool known = k == "caller";
      for (const auto& t : node->targets) known = known || t == k;
      if (!known) r.fail(args.line, "macro '" + node->name + "' takes no keyword argument '" + k + "'");
      if (k == "caller") frame->vars.emplace_back(k, v);
    }
    ++r.depth_;
    std::string text;
    try {
      text = r.capture(node->body, frame);
    } catch (...) {
      --r.depth_;
      throw;
    }
    --r.depth_;
    return Value::string(std::move(text));
  });
}

Renderer::Flow Renderer::exec_for(const Node& n, const ScopePtr& scope) {
  Value items = eval(*n.kids[0], scope);
  loop_body(n, scope, items, 1);
  return Flow::normal;
}

void Renderer::loop_body(const Node& n, const ScopePtr& scope, const Value& items_in, int depth) {
  if (depth > opt_.max_depth) fail(n.line, "recursion deeper than " + std::to_string(opt_.max_depth));
  List items = iterate(items_in, n.line);
  auto bind = [&](const ScopePtr& frame, const Value& item) {
    if (n.targets.size() == 1) {
      frame->vars.emplace_back(n.targets[0], item);
      return;
    }
    if (item.kind != Kind::list || item.list->size() != n.targets.size()) {
      fail(n.line, "cannot unpack loop item into " + std::to_string(n.targets.size()) + " names");
    }
    for (std::size_t k = 0; k < n.targets.size(); ++k) frame->vars.emplace_back(n.targets[k], (*item.list)[k]);
  };
  if (n.kids[1]) {  // {% for x in xs if cond %}: the loop sees only the items that pass
    List kept;
    for (const auto& item : items) {
      auto frame = std::make_shared<Scope>();
      frame->parent = scope;
      bind(frame, item);
      if (truthy(eval(*n.kids[1], frame))) kept.push_back(item);
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    exec(n.else_body, scope);
    return;
  }
  auto recurse = std::make_shared<Function>([this, &n, scope, depth](Renderer&, CallArgs& args) -> Value {
    if (!n.flag) fail(args.line, "loop() needs a 'recursive' for loop");
    if (args.pos.size() != 1) fail(args.line, "loop() takes one argument");
    std::string* saved = sink_;
    std::string buf;
    sink_ = &buf;
    try {
      loop_body(n, scope, args.pos[0], depth + 1);
    } catch (...) {
      sink_ = saved;
      throw;
    }
    sink_ = saved;
    return Value::string(std::move(buf));
  });
  const std::int64_t len = static_cast<std::int64_t>(items.size());
  for (std::int64_t k = 0; k < len; ++k) {
    charge(1, n.line);  // an empty body still costs its iterations
    auto frame = std::make_shared<Scope>();
    frame->parent = scope;
    List cycle_items;
    Dict loop = {
        {"index0", Value::integer(k)},
        {"index", Value::integer(k + 1)},
        {"revindex0", Value::integer(len - k - 1)},
        {"revindex", Value::integer(len - k)},
        {"first", Value::boolean(k == 0)},
        {"last", Value::boolean(k == len - 1)},
        {"length", Value::integer(len)},
        {"depth", Value::integer(depth)},
        {"depth0", Value::integer(depth - 1)},
        {"previtem", k > 0 ? items[k - 1] : Value::undefined("'loop.previtem' is undefined")},
        {"nextitem", k + 1 < len ? items[k + 1] : Value::undefined("'loop.nextitem' is undefined")},
        {"cycle", Value::function([k](Renderer& r, CallArgs& args) -> Value {
           if (args.pos.empty()) r.fail(args.line, "loop.cycle() needs at least one value");
           return args.pos[static_cast<std::size_t>(k) % args.pos.size()];
         })},
    };
    Value loop_value = Value::make_dict(std::move(loop));
    loop_value.fn = recurse;
    frame->vars.emplace_back("loop", loop_value);
    bind(frame, items[k]);
    Flow f = exec(n.body, frame);
    if (f == Flow::break_) break;
  }
}

Value Renderer::lookup(const std::string& name, const ScopePtr& scope) const {
  for (const Scope* s = scope.get(); s; s = s->parent.get()) {
    for (const auto& [k, v] : s->vars) {
      if (k == name) return v;
    }
  }
  if (const Value* v = context_.find(name)) return *v;
  Value g = global(name);
  return g.is_undefined() ? Value::undefined("'" + name + "' is undefined") : g;
}

void Renderer::eval_args(const Node& n, std::size_t first, const ScopePtr& scope, CallArgs& args) {
  for (std::size_t k = first; k < n.kids.size(); ++k) args.pos.push_back(eval(*n.kids[k], scope));
  for (const auto& [k, e] : n.kwargs) args.kw.emplace_back(k, eval(*e, scope));
}

Value Renderer::call(const Value& callee, CallArgs& args, int line) {
  args.line = line;
  if (!callee.fn) {
    if (callee.is_undefined()) fail(line, callee.s + " (or not a function this renderer provides)");
    fail(line, std::string("'") + kind_name(callee.kind) + "' object is not callable");
  }
  return (*callee.fn)(*this, args);
}

Value Renderer::eval(const Node& n, const ScopePtr& scope) {
  charge(1, n.line);
  switch (n.kind) {
    case NodeKind::literal: return n.literal;
    case NodeKind::name: return lookup(n.name, scope);
    case NodeKind::getattr: return getattr(eval(*n.kids[0], scope), n.name, n.line);
    case NodeKind::getitem: return getitem(eval(*n.kids[0], scope), eval(*n.kids[1], scope), n.line);
    case NodeKind::slice: return eval_slice(n, scope);
    case NodeKind::call: {
      Value callee = eval(*n.kids[0], scope);
      CallArgs args;
      eval_args(n, 1, scope, args);
      return call(callee, args, n.line);
    }
    case NodeKind::filter: {
      Value v = n.kids[0] ? eval(*n.kids[0], scope) : filter_input_;
      CallArgs args;
      args.line = n.line;
      eval_args(n, 1, scope, args);
      return filter(n.name, v, args, n.line);
    }
    case NodeKind::test: {
      Value v = eval(*n.kids[0], scope);
      CallArgs args;
      args.line = n.line;
      eval_args(n, 1, scope, args);
      return Value::boolean(test(n.name, v, args, n.line) != n.flag);
    }
    case NodeKind::unary: {
      Value v = eval(*n.kids[0], scope);
      if (!v.is_number()) fail(n.line, std::string("bad operand type for unary ") + n.name + ": '" + kind_name(v.kind) + "'");
      if (n.name == "+") return v.kind == Kind::boolean ? Value::integer(v.b) : v;
      if (v.kind == Kind::floating) return Value::floating(-v.f);
      std::int64_t negated = 0;
      if (__builtin_sub_overflow(std::int64_t{0}, v.kind == Kind::integer ? v.i : std::int64_t{v.b}, &negated))
        fail(n.line, "integer overflow (Python ints are unbounded; this renderer's are 64-bit)");
      return Value::integer(negated);
    }
    case NodeKind::binary: return eval_binary(n, eval(*n.kids[0], scope), eval(*n.kids[1], scope));
    case NodeKind::and_: {
      Value l = eval(*n.kids[0], scope);
      return truthy(l) ? eval(*n.kids[1], scope) : l;
    }
    case NodeKind::or_: {
      Value l = eval(*n.kids[0], scope);
      return truthy(l) ? l : eval(*n.kids[1], scope);
    }
    case NodeKind::not_: return Value::boolean(!truthy(eval(*n.kids[0], scope)));
    case NodeKind::cond:
      if (truthy(eval(*n.kids[0], scope))) return eval(*n.kids[1], scope);
      return n.kids[2] ? eval(*n.kids[2], scope) : Value::undefined("the missing else of a conditional expression is undefined");
    case NodeKind::list:
    case NodeKind::tuple: {
      List l;
      for (const auto& k : n.kids) l.push_back(eval(*k, scope));
      return Value::make_list(std::move(l), n.kind == NodeKind::tuple);
    }
    case NodeKind::dict: {
      Dict d;
      for (std::size_t k = 0; k + 1 < n.kids.size(); k += 2) {
        Value key = eval(*n.kids[k], scope);
        if (key.kind == Kind::list || key.kind == Kind::dict || key.kind == Kind::undefined || key.kind == Kind::function ||
            key.kind == Kind::ns) {
          fail(n.line, std::string("unsupported template construct: a dict key of type ") + kind_name(key.kind));
        }
        if (key.kind == Kind::floating && key.f == std::floor(key.f)) key = Value::integer(static_cast<std::int64_t>(key.f));
        if (key.kind == Kind::boolean) key = Value::integer(key.b);  // Python: True and 1 are one key
        Value v = eval(*n.kids[k + 1], scope);
        std::string dk_text = dict_key(key);
        bool replaced = false;
        for (auto& [dk, dv] : d) {
          if (dk == dk_text) dv = v, replaced = true;
        }
        if (!replaced) d.emplace_back(dk_text, v);
      }
      return Value::make_dict(std::move(d));
    }
    case NodeKind::compare: return eval_compare(n, scope);
    default: fail(n.line, "internal: not an expression");
  }
}

Value Renderer::eval_compare(const Node& n, const ScopePtr& scope) {
  Value left = eval(*n.kids[0], scope);
  for (std::size_t k = 0; k < n.ops.size(); ++k) {
    Value right = eval(*n.kids[k + 1], scope);
    const std::string& op = n.ops[k];
    bool r;
    if (op == "==" || op == "!=") {
      r = equal(left, right) == (op == "==");
    } else if (op == "in" || op == "not in") {
      CallArgs args;
      args.pos.push_back(right);
      r = test("in", left, args, n.line) == (op == "in");
    } else {
      std::string err;
      int c = compare(left, right, err);
      if (!err.empty()) fail(n.line, "'" + op + "' " + err);
      r = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
    }
    if (!r) return Value::boolean(false);
    left = right;
  }
  return Value::boolean(true);
}

}  // namespace anvil::data::jinja
