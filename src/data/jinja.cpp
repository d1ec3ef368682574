#include "data/jinja.h"

#include "core/error.h"
#include "data/jinja_eval.h"

namespace anvil::data::jinja {

Template::Template(std::string_view source, std::string where) : where_(std::move(where)) {
  Parsed p = parse_template(source, where_);
  body_ = std::move(p.body);
  has_generation_ = p.has_generation;
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

Rendered Template::render(const nlohmann::ordered_json& context, const RenderOptions& opt) const {
  ANVIL_CHECK_INPUT(context.is_object(), where_, ": the template context must be a JSON object");
  Rendered out;
  Renderer r(where_, opt, out, from_json(context));
  r.run(body_);
  return out;
}

}  // namespace anvil::data::jinja
