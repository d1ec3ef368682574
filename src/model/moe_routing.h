// The MoE routing as model code names it: the types and host loops live with the backend
// (backend/moe_route.h), whose ops run them on either backend; the training model calls
// those ops (Backend::moe_*), the host-memory decoder (llama_generate.cpp) these loops.
#pragma once

#include "backend/moe_route.h"

namespace anvil::model {

using backend::MoeRoute;
using backend::moe_aux_accumulate;
using backend::moe_combine;
using backend::moe_combine_backward;
using backend::moe_gather;
using backend::moe_route;
using backend::moe_router_backward;
using backend::moe_scatter;

}  // namespace anvil::model
