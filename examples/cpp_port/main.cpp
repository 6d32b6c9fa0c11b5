/*
 * main.cpp - a tiny "ported engine" in plain C++ that taps its layers through nnparity.hpp, the
 * way a C++ port of a PyTorch model does: every layer's input through tap_inputf (so that, under
 * injection, the layer runs on the reference's input) and its output through tapf, with names
 * formatted per block ("blk.1.fc2"). The model: two residual MLP blocks (Linear -> GELU ->
 * Linear, added back to the block's input) and a Linear head, weights from a fixed seed.
 *
 *   cpp_port [--bad] [--out OUT.safetensors]       run the engine, print its output
 *   cpp_port --diff REF PORT [--rules FILE]        compare two captures (exit 0 agree, 1 not)
 *
 * Capture and injection follow the environment (NNPARITY_CAPTURE, NNPARITY_INJECT,
 * NNPARITY_RULES), as `nnparity run` sets it; --out records through an nnparity::Capture guard
 * instead. --bad plants a real porting mistake: block 1's GELU uses the tanh approximation
 * instead of erf. `cpp_port --diff` (or `nnparity diff`) on a correct and a --bad capture names
 * blk.1.act as where the port first diverges.
 */
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "nnparity.hpp"

namespace {

const int TOKENS = 4, DIM = 8, HIDDEN = 16, BLOCKS = 2, CLASSES = 3;

/* Fixed weights: a linear congruential generator from a fixed seed, uniform in [-1, 1). */
struct Rng {
    std::uint64_t state = 0x9e3779b97f4a7c15ull;
    float next()
    {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        return static_cast<float>(static_cast<double>(state >> 11) / 9007199254740992.0) * 2.0f -
               1.0f;
    }
    std::vector<float> fill(std::size_t n, float scale)
    {
        std::vector<float> v(n);
        for (float &x : v)
            x = next() * scale;
        return v;
    }
};

struct Linear {
    int in, out;
    std::vector<float> w, b; /* w: [out, in], as torch.nn.Linear stores it */
    Linear(Rng &rng, int in_, int out_)
        : in(in_), out(out_), w(rng.fill(static_cast<std::size_t>(in_ * out_), 0.5f)),
          b(rng.fill(static_cast<std::size_t>(out_), 0.1f))
    {
    }
    std::vector<float> operator()(const std::vector<float> &x, int rows) const
    {
        std::vector<float> y(static_cast<std::size_t>(rows * out));
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < out; o++) {
                float s = b[static_cast<std::size_t>(o)];
                for (int i = 0; i < in; i++)
                    s += x[static_cast<std::size_t>(r * in + i)] *
                         w[static_cast<std::size_t>(o * in + i)];
                y[static_cast<std::size_t>(r * out + o)] = s;
            }
        return y;
    }
};

std::vector<float> gelu(const std::vector<float> &x, bool tanh_approximation)
{
    std::vector<float> y(x.size());
    for (std::size_t i = 0; i < x.size(); i++) {
        float v = x[i];
        if (tanh_approximation) /* the planted bug: not what torch.nn.GELU() computes */
            y[i] = 0.5f * v *
                   (1.0f + std::tanh(0.7978845608f * (v + 0.044715f * v * v * v)));
        else
            y[i] = 0.5f * v * (1.0f + std::erf(v / std::sqrt(2.0f)));
    }
    return y;
}

int run_engine(bool bad, const std::string &out)
{
    const char *cap = std::getenv("NNPARITY_CAPTURE"), *inj = std::getenv("NNPARITY_INJECT");
    bool from_env = (cap && *cap) || (inj && *inj);
    /* The environment wins: `nnparity run` names the files there. */
    std::unique_ptr<nnparity::Capture> session;
    if (!from_env && !out.empty()) {
        nnparity::CaptureOptions o;
        o.expected_records = 2 * 3 * BLOCKS + BLOCKS + 3;
        session.reset(new nnparity::Capture(out, o));
    } else if (from_env && nnparity::Capture::active() == 0) {
        return 2; /* the environment's session could not start, and the library said why */
    }
    nnparity::Capture::set_meta("engine", "cpp_port");
    nnparity::Capture::set_meta("variant", bad ? "bad: tanh GELU in blk.1" : "correct");

    Rng rng;
    std::vector<Linear> fc1, fc2;
    for (int b = 0; b < BLOCKS; b++) {
        fc1.emplace_back(rng, DIM, HIDDEN);
        fc2.emplace_back(rng, HIDDEN, DIM);
    }
    Linear head(rng, DIM, CLASSES);
    std::vector<float> x = rng.fill(TOKENS * DIM, 1.0f);
    nnparity::tap("input", "out0", x, {TOKENS, DIM});

    /* Each layer reads its own copy of its input, as an engine's layers read their own
     * buffers: under injection, the input tap overwrites it with the reference's before the
     * layer runs. */
    for (int b = 0; b < BLOCKS; b++) {
        std::size_t i = static_cast<std::size_t>(b);
        std::vector<float> h_in = x;
        nnparity::tap_inputf("in0", {TOKENS, DIM}, h_in.data(), "blk.%d.fc1", b);
        std::vector<float> h = fc1[i](h_in, TOKENS);
        nnparity::tapf("out0", {TOKENS, HIDDEN}, h.data(), "blk.%d.fc1", b);

        nnparity::tap_inputf("in0", {TOKENS, HIDDEN}, h.data(), "blk.%d.act", b);
        std::vector<float> g = gelu(h, bad && b == 1);
        nnparity::tapf("out0", {TOKENS, HIDDEN}, g.data(), "blk.%d.act", b);

        nnparity::tap_inputf("in0", {TOKENS, HIDDEN}, g.data(), "blk.%d.fc2", b);
        std::vector<float> y = fc2[i](g, TOKENS);
        nnparity::tapf("out0", {TOKENS, DIM}, y.data(), "blk.%d.fc2", b);

        for (std::size_t k = 0; k < x.size(); k++)
            x[k] += y[k]; /* the residual */
        nnparity::tapf("out0", {TOKENS, DIM}, x.data(), "blk.%d", b);
    }
    /* names as std::string, with the layer's type */
    const std::string head_name = "head";
    std::vector<float> head_in = x;
    nnparity::tap_input(head_name, "in0", head_in, {TOKENS, DIM}, "Linear");
    std::vector<float> logits = head(head_in, TOKENS);
    nnparity::tap(head_name, "out0", logits, {TOKENS, CLASSES}, "Linear");

    if (session)
        session->close(); /* throws if the dump could not be finished */
    for (int t = 0; t < TOKENS; t++) {
        std::printf("token %d:", t);
        for (int c = 0; c < CLASSES; c++)
            std::printf(" %9.5f", static_cast<double>(logits[static_cast<std::size_t>(t * CLASSES + c)]));
        std::printf("\n");
    }
    return 0;
}

/* Compare two captures with the library's diff, through the C++ wrappers. */
int run_diff(const std::string &ref_path, const std::string &port_path, const std::string &rules_path)
{
    auto dumps = nnparity::Dump::open_both(ref_path, port_path);
    nnparity::Dump &ref = dumps.first, &port = dumps.second;
    nnparity::Rules rules;
    if (!rules_path.empty())
        rules = nnparity::Rules::load(rules_path);
    nnparity::Diff diff(ref, port, rules);
    const char *variant = port.meta("variant");
    std::printf("%s (%zu records) vs %s (%zu records%s%s)\n", ref.path(), ref.size(), port.path(),
                port.size(), variant ? ", " : "", variant ? variant : "");
    for (const nnp_diff_pair &p : diff)
        std::printf("  %-5s %-22s rel-L2 %.3g  max-abs %.3g\n", nnp_verdict_name(p.verdict),
                    ref[p.ref].name, p.metrics.rel_l2, p.metrics.max_abs);
    for (std::size_t r : diff.unmatched_ref())
        std::printf("  only in the reference: %s\n", ref[r].name);
    for (std::size_t r : diff.unmatched_port())
        std::printf("  only in the port: %s\n", port[r].name);
    if (diff.agrees()) {
        std::printf("the port agrees with the reference\n");
        return 0;
    }
    if (diff.first_divergence() >= 0)
        std::printf("first divergence: %s\n",
                    ref[diff[static_cast<std::size_t>(diff.first_divergence())].ref].name);
    else
        std::printf("the port runs its layers in another order\n");
    return 1;
}

int usage()
{
    std::fprintf(stderr, "usage: cpp_port [--bad] [--out OUT.safetensors]\n"
                         "       cpp_port --diff REF PORT [--rules FILE]\n");
    return 2;
}

} // namespace

int main(int argc, char **argv)
{
    bool bad = false;
    std::string out, rules;
    std::vector<std::string> diff;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--bad")
            bad = true;
        else if (a == "--out" && i + 1 < argc)
            out = argv[++i];
        else if (a == "--rules" && i + 1 < argc)
            rules = argv[++i];
        else if (a == "--diff" && i + 2 < argc) {
            diff.push_back(argv[++i]);
            diff.push_back(argv[++i]);
        } else
            return usage();
    }
    try {
        if (!diff.empty())
            return run_diff(diff[0], diff[1], rules);
        if (!rules.empty())
            return usage();
        return run_engine(bad, out);
    } catch (const nnparity::Error &e) {
        std::fprintf(stderr, "cpp_port: %s\n", e.what());
        return 2;
    }
}
