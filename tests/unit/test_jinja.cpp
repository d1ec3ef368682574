#include "data/jinja.h"
#include <gtest/gtest.h>
using anvil::data::jinja::Template;
TEST(Jinja, Smoke) {
  Template t("{% for m in messages %}{{ m.role }}:{{ m['content'] | trim }}\n{% endfor %}", "t");
  auto r = t.render(nlohmann::ordered_json::parse(R"({"messages":[{"role":"user","content":" hi "}]})"));
  EXPECT_EQ(r.text, "user:hi\n");
}
