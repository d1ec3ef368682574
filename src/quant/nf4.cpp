// NF4 quantization with double-quantized absmax, bit for bit as bitsandbytes 0.50.2 does it
// on CPU (its torch path for the 4-bit codes and the offset, its C path for the 8-bit absmax
// codes): the sums, products and quotients below are in the same order and precision as
// there (built with -ffp-contract=off so that no product and sum fuse into one rounding).
// One difference by design: torch sums an absmax of 32768 blocks or more (a weight of 2M
// parameters) over its threads, which moves the offset's last bit with the thread count;
// this file always sums in torch's one-thread order, so a rank's quantization does not
// depend on the machine.
#include "quant/nf4.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace anvil::quant {

using i64 = std::int64_t;

const std::array<float, 16>& nf4_code() {
  // bitsandbytes' table (the QLoRA paper's Appendix E), to the float32 it stores.
  static const std::array<float, 16> code = {
      -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
      -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
      0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
      0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
  return code;
}

namespace {

// torch.linspace(start, end, n) in float32 as its CPU kernel computes it: the first half
// counts up from start, the second half down from end, each point one fused multiply-add
// (the kernel is built with FMA contraction; plain products differ in the last bit of 12
// of the map's 256 values).
std::vector<float> linspace_f32(float start, float end, int n) {
  const float step = (end - start) / static_cast<float>(n - 1);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (int k = 0; k < n; ++k)
    v[k] = k < n / 2 ? std::fma(step, static_cast<float>(k), start)
                     : std::fma(-step, static_cast<float>(n - k - 1), end);
  return v;
}

std::array<float, 256> make_dynamic_map() {
  // 7 exponent ranges 10^-6 .. 10^0; range i holds the midpoints of 2^i + 1 points on
  // [0.1, 1], with both signs; then 0 and 1.
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const std::vector<float> b = linspace_f32(0.1f, 1.0f, (1 << i) + 1);
    const auto scale = static_cast<float>(std::pow(10.0, i - 6));
    for (std::size_t k = 0; k + 1 < b.size(); ++k) {
      const float mean = (b[k] + b[k + 1]) / 2.0f;
      data.push_back(scale * mean);
      data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  ANVIL_CHECK(data.size() == 256, "dynamic map has ", data.size(), " values");
  std::sort(data.begin(), data.end());
  std::array<float, 256> out{};
  std::copy(data.begin(), data.end(), out.begin());
  return out;
}

// The 15 midpoints between neighbouring NF4 codes: a value's code is the number of
// midpoints below it (torch.bucketize), so a tie goes to the lower code.
std::array<float, 15> nf4_bounds() {
  const auto& c = nf4_code();
  std::array<float, 15> b{};
  for (int i = 0; i < 15; ++i) b[i] = (c[i] + c[i + 1]) / 2.0f;
  return b;
}

std::uint8_t nf4_encode(float scaled, const std::array<float, 15>& bounds) {
  std::uint8_t q = 0;
  for (const float b : bounds) q += static_cast<std::uint8_t>(b < scaled);
  return q;
}

// 4-bit codes of x (n values) and the f32 absmax of each block. Full blocks multiply by
// the reciprocal of their absmax, the last partial block divides by it (as bitsandbytes).
void nf4_codes(const float* x, i64 n, std::uint8_t* packed, float* absmax) {
  const auto bounds = nf4_bounds();
  const i64 blocks = (n + kNf4Blocksize - 1) / kNf4Blocksize;
  for (i64 b = 0; b < blocks; ++b) {
    const i64 e0 = b * kNf4Blocksize, e1 = std::min(n, e0 + kNf4Blocksize);
    float amax = 0.0f;
    for (i64 i = e0; i < e1; ++i) amax = std::max(amax, std::fabs(x[i]));
    const bool full = e1 - e0 == kNf4Blocksize;
    const float safe = std::max(amax, 1e-38f), inv = 1.0f / safe;
    absmax[b] = full ? amax : safe;
    for (i64 i = e0; i < e1; ++i) {
      const float scaled = std::clamp(full ? x[i] * inv : x[i] / safe, -1.0f, 1.0f);
      const std::uint8_t q = nf4_encode(scaled, bounds);
      packed[i / 2] = static_cast<std::uint8_t>(i % 2 ? (packed[i / 2] | q) : (q << 4));
    }
  }
  if (n % 2) packed[n / 2] |= nf4_encode(0.0f, bounds);  // the pad element is a zero
}

// torch's float32 sum on CPU (its cascade sum, one thread), which bitsandbytes' offset
// (absmax.mean() = sum / n) goes through. Groups of 8 values are added lane by lane (its
// vector width for this kernel on x86, AVX2 and AVX-512 builds alike), the groups taken
// four at a time, each of the four in a running sum that is folded into three coarser
// levels every 2^p steps; the four are added, then the leftover values and the eight lanes
// one by one. Torch splits arrays of 32768 values or more over its threads, which changes
// the last bit with the thread count; this is its one-thread order.
class TorchCpuSum {
 public:
  static float sum(const float* x, i64 n) {
    if (n < kLanes) return ilp_sum<1>(n, [&](i64 i, i64) { return x[i]; })[0];
    const i64 groups = n / kLanes;
    const Lanes<kLanes> v = ilp_sum<kLanes>(groups, [&](i64 g, i64 l) { return x[g * kLanes + l]; });
    float total = 0.0f;
    for (i64 i = groups * kLanes; i < n; ++i) total += x[i];
    for (const float lane : v) total += lane;
    return total;
  }

 private:
  static constexpr i64 kLanes = 8;
  template <i64 W>
  using Lanes = std::array<float, static_cast<std::size_t>(W)>;

  template <i64 W>
  static void add(Lanes<W>& a, const Lanes<W>& b) {
    for (i64 l = 0; l < W; ++l) a[l] += b[l];
  }

  // The sum of `count` items of W lanes (item i, lane l: at(i, l)), four running sums
  // over items 4j + k, then the leftover items into the first, then the four together.
  template <i64 W, typename At>
  static Lanes<W> ilp_sum(i64 count, const At& at) {
    const i64 steps = count / 4;
    const auto item = [&](i64 i) {
      Lanes<W> v{};
      for (i64 l = 0; l < W; ++l) v[l] = at(i, l);
      return v;
    };
    std::array<Lanes<W>, 4> part = cascade<W>(steps, [&](i64 j, i64 k) { return item(4 * j + k); });
    for (i64 i = 4 * steps; i < count; ++i) add<W>(part[0], item(i));
    for (int k = 1; k < 4; ++k) add<W>(part[0], part[k]);
    return part[0];
  }

  // Four running sums over `steps` steps, with three coarser levels: every 2^p steps the
  // finest level is added into the next and cleared, and so on up while the step count is
  // a multiple of that level's span (p = max(4, ceil(log2(steps)) / 4)).
  template <i64 W, typename Row>
  static std::array<Lanes<W>, 4> cascade(i64 steps, const Row& row) {
    int log2 = 1;
    while (steps > 2 && (i64{1} << log2) < steps) ++log2;
    const int p = std::max(4, log2 / 4);
    const i64 span = i64{1} << p;
    std::array<std::array<Lanes<W>, 4>, 4> level{};
    i64 i = 0;
    for (; i + span <= steps;) {
      for (i64 j = 0; j < span; ++j, ++i)
        for (int k = 0; k < 4; ++k) add<W>(level[0][k], row(i, k));
      for (int up = 1; up < 4; ++up) {
        for (int k = 0; k < 4; ++k) {
          add<W>(level[up][k], level[up - 1][k]);
          level[up - 1][k] = Lanes<W>{};
        }
        if ((i & ((span - 1) << (up * p))) != 0) break;
      }
    }
    for (; i < steps; ++i)
      for (int k = 0; k < 4; ++k) add<W>(level[0][k], row(i, k));
    for (int up = 1; up < 4; ++up)
      for (int k = 0; k < 4; ++k) add<W>(level[0][k], level[up][k]);
    return level[0];
  }
};

// bitsandbytes' search for an 8-bit code on CPU (0.50.2): [-1, 1] sampled at 65536
// evenly spaced points, each point given the code whose midpoint interval holds it (the
// count of midpoints below the point); a value takes the code of the sample point nearest
// it. That is the nearest code except within half a sample spacing (1.5e-5) of a midpoint,
// where it can be the neighbour (1 absmax block of 264 in the golden test). Same float
// operations in the same order as there, so the same table and the same picks.
class Code8Search {
 public:
  explicit Code8Search(const float* code) : table_(kPoints) {
    std::array<float, 255> mid{};
    for (int i = 0; i < 255; ++i) mid[i] = 0.5f * (code[i] + code[i + 1]);
    int c = 0;
    for (int p = 0; p < kPoints; ++p) {
      const float at = -1.0f + (2.0f * static_cast<float>(p)) / static_cast<float>(kPoints - 1);
      while (c < 255 && mid[c] < at) ++c;
      table_[p] = static_cast<std::uint8_t>(c);
    }
  }
  std::uint8_t operator()(float v) const {
    v = std::clamp(v, -1.0f, 1.0f);
    const float at = (v + 1.0f) * 0.5f * static_cast<float>(kPoints - 1) + 0.5f;
    return table_[static_cast<std::uint16_t>(at)];
  }

 private:
  static constexpr int kPoints = 65536;
  std::vector<std::uint8_t> table_;
};

}  // namespace

const std::array<float, 256>& dynamic_map_signed() {
  static const std::array<float, 256> map = make_dynamic_map();
  return map;
}

float nf4_absmax_offset(const float* absmax, i64 blocks) {
  return TorchCpuSum::sum(absmax, blocks) / static_cast<float>(blocks);
}

void blockwise8_quantize(const float* x, i64 n, i64 blocksize, const float* code,
                         std::uint8_t* q, float* absmax) {
  const Code8Search search(code);
  for (i64 e0 = 0, b = 0; e0 < n; e0 += blocksize, ++b) {
    const i64 e1 = std::min(n, e0 + blocksize);
    float amax = 0.0f;
    for (i64 i = e0; i < e1; ++i) amax = std::max(amax, std::fabs(x[i]));
    absmax[b] = amax;
    // An all-zero block has no scale; any code dequantizes to 0 there: code 0, as bitsandbytes.
    if (amax == 0.0f) {
      std::fill(q + e0, q + e1, std::uint8_t{0});
      continue;
    }
    const float inv = 1.0f / amax;
    for (i64 i = e0; i < e1; ++i) q[i] = search(x[i] * inv);
  }
}

QuantTensor nf4_quantize(const float* x, i64 n) {
  ANVIL_CHECK(n > 0, "nf4: nothing to quantize");
  const i64 blocks = (n + kNf4Blocksize - 1) / kNf4Blocksize;
  QuantTensor t;
  t.codes.assign(static_cast<std::size_t>((n + 1) / 2), 0);
  std::vector<float> absmax(static_cast<std::size_t>(blocks));
  nf4_codes(x, n, t.codes.data(), absmax.data());
  // Double quantization: the absmax around its mean (torch's, as bitsandbytes takes it),
  // 8-bit in blocks of 256.
  t.state.offset = nf4_absmax_offset(absmax.data(), blocks);
  for (float& a : absmax) a -= t.state.offset;
  const auto& map = dynamic_map_signed();
  t.absmax_code.assign(map.begin(), map.end());
  t.absmax_q.resize(absmax.size());
  t.absmax2.resize(static_cast<std::size_t>((blocks + kAbsmaxBlocksize - 1) / kAbsmaxBlocksize));
  blockwise8_quantize(absmax.data(), blocks, kAbsmaxBlocksize, map.data(), t.absmax_q.data(),
                      t.absmax2.data());
  t.code.assign(nf4_code().begin(), nf4_code().end());
  t.state.blocksize = kNf4Blocksize;
  t.state.absmax_blocksize = kAbsmaxBlocksize;
  t.bind();
  return t;
}

float nf4_block_absmax(const QuantState& s, i64 b) {
  if (s.absmax_f32) return s.absmax_f32[b];
  const float scaled = s.absmax_code[s.absmax_q[b]] * s.absmax2[b / s.absmax_blocksize];
  return scaled + s.offset;
}

void nf4_dequantize(const QuantState& s, const std::uint8_t* codes, i64 first, i64 count,
                    float* dst) {
  const i64 end = first + count;
  for (i64 b = first / s.blocksize; b * s.blocksize < end; ++b) {
    const float amax = nf4_block_absmax(s, b);
    const i64 e0 = std::max(first, b * s.blocksize), e1 = std::min(end, (b + 1) * s.blocksize);
    float lut[16];
    for (int k = 0; k < 16; ++k) lut[k] = s.code[k] * amax;
    i64 i = e0;
    if (i % 2 && i < e1) {  // starts on a low nibble
      dst[i - first] = lut[codes[i / 2] & 0xf];
      ++i;
    }
    for (; i + 1 < e1; i += 2) {  // whole bytes: high nibble first
      const std::uint8_t byte = codes[i / 2];
      dst[i - first] = lut[byte >> 4];
      dst[i + 1 - first] = lut[byte & 0xf];
    }
    if (i < e1) dst[i - first] = lut[codes[i / 2] >> 4];
  }
}

}  // namespace anvil::quant
