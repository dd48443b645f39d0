// Causal grouped-query attention forward/backward through cuDNN's fused flash-attention graphs
// (cudnn-frontend, header-only; libcudnn.so.9 is dlopen'ed at run time, nothing links to it).
// Chosen over FlashAttention-2 by measurement (docs/cuda-notes.md): on the H100 the cuDNN
// kernels run the trainer's shapes 1.37x (D=64) and 1.53x (D=128) faster, fwd+bwd.
//
// Layouts (the trainer's projection outputs, no transposes):
//   q, o, dq, do: (B, T, Hq, D) bf16; k, v, dk, dv: (B, T, Hkv, D) bf16.
//   dense:  one sequence per row; stats (lse, natural log) (B, Hq, T) f32.
//   ragged: packed segments; b = segment count, s = the row length (upper bound), ragged offsets
//           (b+1 int32, in elements) and seq_len (b int32) come from the caller; stats are token-
//           major (N, Hq) f32 (cuDNN's THD stats layout).
// Graphs are built once per shape and cached. All entry points return 0 on success, else -1 with
// a message for ct_sdpa_last_error().
#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING 1
#include <cudnn_frontend.h>
#include <dlfcn.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>

namespace cudnn_frontend {
void *cudnn_dlhandle = nullptr;
}

namespace fe = cudnn_frontend;

extern "C" {
struct CtSdpaDesc {
    int64_t b;       // sequences
    int64_t hq;      // query heads
    int64_t hkv;     // key/value heads
    int64_t s;       // sequence length (ragged: upper bound)
    int64_t d;       // head dim
    int64_t total;   // tokens (ragged only)
    float scale;     // softmax scale
    int32_t ragged;  // 1: packed segments (THD + ragged offsets + padding mask)
    int32_t bwd;     // 0: forward, 1: backward
};
}

namespace {
enum Uid : int64_t {
    Q = 1, K, V, O, STATS, DO, DQ, DK, DV, SEQ_Q, SEQ_KV, OFF_Q, OFF_KV, OFF_STATS, N_UID
};

thread_local std::string g_err;
std::mutex g_mu;
cudnnHandle_t g_handle = nullptr;

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, int32_t, int32_t>;
struct Entry {
    std::shared_ptr<fe::graph::Graph> g;
    int64_t ws = 0;
};
std::map<Key, Entry> g_cache;

Key key_of(const CtSdpaDesc &d) {
    return {d.b, d.hq, d.hkv, d.s, d.d, d.ragged ? d.total : 0, d.scale, d.ragged, d.bwd};
}

int fail(const std::string &m) {
    g_err = m;
    return -1;
}

#define FE_TRY(expr)                                                              \
    do {                                                                          \
        auto _e = (expr);                                                         \
        if (!_e.is_good()) return fail(std::string(#expr) + ": " + _e.get_message()); \
    } while (0)

using T_ = std::shared_ptr<fe::graph::Tensor_attributes>;

// (b, h, s, d) with BSHD strides: token-major rows of h·d elements. Ragged tensors keep the dense
// batch stride (cuDNN checks its 16-byte alignment; the ragged offsets replace it).
T_ qkv_tensor(fe::graph::Graph &g, int64_t uid, const char *name, const CtSdpaDesc &d, int64_t h) {
    int64_t bstride = d.s * h * d.d;
    return g.tensor(fe::graph::Tensor_attributes()
                        .set_uid(uid)
                        .set_name(name)
                        .set_dim({d.b, h, d.s, d.d})
                        .set_stride({bstride, d.d, h * d.d, 1}));
}

void shape_like_q(const T_ &t, int64_t uid, const CtSdpaDesc &d, int64_t h) {
    int64_t bstride = d.s * h * d.d;
    t->set_output(true).set_uid(uid).set_dim({d.b, h, d.s, d.d}).set_stride({bstride, d.d, h * d.d, 1});
}

T_ int_tensor(fe::graph::Graph &g, int64_t uid, const char *name, int64_t n) {
    return g.tensor(fe::graph::Tensor_attributes()
                        .set_uid(uid)
                        .set_name(name)
                        .set_dim({n, 1, 1, 1})
                        .set_stride({1, 1, 1, 1})
                        .set_data_type(fe::DataType_t::INT32));
}

void stats_layout(const T_ &t, const CtSdpaDesc &d) {
    t->set_uid(STATS).set_data_type(fe::DataType_t::FLOAT).set_dim({d.b, d.hq, d.s, 1});
    if (d.ragged) {
        t->set_stride({d.hq * d.s, 1, d.hq, 1});
    } else {
        t->set_stride({d.hq * d.s, d.s, 1, 1});
    }
}

int build(const CtSdpaDesc &d, Entry &out) {
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto q = qkv_tensor(*g, Q, "Q", d, d.hq);
    auto k = qkv_tensor(*g, K, "K", d, d.hkv);
    auto v = qkv_tensor(*g, V, "V", d, d.hkv);
    T_ seq_q, seq_kv, off_q, off_kv, off_st;
    if (d.ragged) {
        seq_q = int_tensor(*g, SEQ_Q, "seq_q", d.b);
        seq_kv = int_tensor(*g, SEQ_KV, "seq_kv", d.b);
        off_q = int_tensor(*g, OFF_Q, "off_q", d.b + 1);
        off_kv = int_tensor(*g, OFF_KV, "off_kv", d.b + 1);
        off_st = int_tensor(*g, OFF_STATS, "off_stats", d.b + 1);
        q->set_ragged_offset(off_q);
        k->set_ragged_offset(off_kv);
        v->set_ragged_offset(off_kv);
    }
    if (!d.bwd) {
        auto opt = fe::graph::SDPA_attributes()
                       .set_name("ct_sdpa_fwd")
                       .set_generate_stats(true)
                       .set_attn_scale(d.scale)
                       .set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
                       .set_diagonal_band_right_bound(0);
        if (d.ragged) {
            opt.set_padding_mask(true).set_seq_len_q(seq_q).set_seq_len_kv(seq_kv);
            opt.set_max_total_seq_len_q(d.total).set_max_total_seq_len_kv(d.total);
        }
        auto [o, stats] = g->sdpa(q, k, v, opt);
        shape_like_q(o, O, d, d.hq);
        stats->set_output(true);
        stats_layout(stats, d);
        if (d.ragged) {
            o->set_ragged_offset(off_q);
            stats->set_ragged_offset(off_st);
        }
    } else {
        auto o = qkv_tensor(*g, O, "O", d, d.hq);
        auto dout = qkv_tensor(*g, DO, "dO", d, d.hq);
        auto stats = g->tensor(fe::graph::Tensor_attributes().set_name("Stats"));
        stats_layout(stats, d);
        if (d.ragged) {
            o->set_ragged_offset(off_q);
            dout->set_ragged_offset(off_q);
            stats->set_ragged_offset(off_st);
        }
        auto opt = fe::graph::SDPA_backward_attributes()
                       .set_name("ct_sdpa_bwd")
                       .set_attn_scale(d.scale)
                       .set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
                       .set_diagonal_band_right_bound(0);
        if (d.ragged) {
            opt.set_padding_mask(true).set_seq_len_q(seq_q).set_seq_len_kv(seq_kv);
            opt.set_max_total_seq_len_q(d.total).set_max_total_seq_len_kv(d.total);
        }
        auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, dout, stats, opt);
        shape_like_q(dq, DQ, d, d.hq);
        shape_like_q(dk, DK, d, d.hkv);
        shape_like_q(dv, DV, d, d.hkv);
        if (d.ragged) {
            dq->set_ragged_offset(off_q);
            dk->set_ragged_offset(off_kv);
            dv->set_ragged_offset(off_kv);
        }
    }
    FE_TRY(g->validate());
    FE_TRY(g->build_operation_graph(g_handle));
    FE_TRY(g->create_execution_plans({fe::HeurMode_t::A}));
    FE_TRY(g->check_support(g_handle));
    FE_TRY(g->build_plans(g_handle));
    int64_t ws = 0;
    FE_TRY(g->get_workspace_size(ws));
    out.g = g;
    out.ws = ws;
    return 0;
}

int entry_for(const CtSdpaDesc &d, Entry **e) {
    auto key = key_of(d);
    auto it = g_cache.find(key);
    if (it == g_cache.end()) {
        Entry fresh;
        if (build(d, fresh) != 0) return -1;
        it = g_cache.emplace(key, fresh).first;
    }
    *e = &it->second;
    return 0;
}
}  // namespace

extern "C" {

const char *ct_sdpa_last_error() { return g_err.c_str(); }

// Loads libcudnn (by soname, through LD_LIBRARY_PATH) and creates the handle. Idempotent.
int ct_sdpa_init(const char *lib) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_handle) return 0;
    try {
        if (!fe::cudnn_dlhandle) {
            fe::cudnn_dlhandle = dlopen(lib, RTLD_NOW | RTLD_GLOBAL);
            if (!fe::cudnn_dlhandle) return fail(std::string("dlopen ") + lib + ": " + dlerror());
        }
        auto st = fe::detail::create_handle(&g_handle);
        if (st != CUDNN_STATUS_SUCCESS) {
            g_handle = nullptr;
            return fail("cudnnCreate failed with status " + std::to_string(static_cast<int>(st)));
        }
    } catch (const std::exception &e) {
        return fail(e.what());
    }
    return 0;
}

// The backend version (e.g. 91900), or -1 before init.
int64_t ct_sdpa_backend_version() {
    if (!fe::cudnn_dlhandle) return -1;
    try {
        return fe::detail::get_backend_version();
    } catch (...) {
        return -1;
    }
}

// Builds (or finds) the graph for `d` and reports its workspace size in bytes.
int ct_sdpa_prepare(const CtSdpaDesc *d, int64_t *workspace_bytes) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!g_handle) return fail("ct_sdpa_init was not called");
    try {
        Entry *e = nullptr;
        if (entry_for(*d, &e) != 0) return -1;
        *workspace_bytes = e->ws;
    } catch (const std::exception &ex) {
        return fail(ex.what());
    }
    return 0;
}

// Runs the graph for `d` on `stream`. ptrs[uid] for uid in 1..N_UID (index 0 unused); the
// tensors the graph does not use are ignored.
int ct_sdpa_run(const CtSdpaDesc *d, void *stream, void *const *ptrs, void *workspace) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!g_handle) return fail("ct_sdpa_init was not called");
    try {
        Entry *e = nullptr;
        if (entry_for(*d, &e) != 0) return -1;
        auto st = fe::detail::set_stream(g_handle, static_cast<cudaStream_t>(stream));
        if (st != CUDNN_STATUS_SUCCESS) return fail("cudnnSetStream failed with status " + std::to_string(static_cast<int>(st)));
        std::unordered_map<int64_t, void *> pack;
        const int64_t fwd_uids[] = {Q, K, V, O, STATS};
        const int64_t bwd_uids[] = {Q, K, V, O, STATS, DO, DQ, DK, DV};
        if (d->bwd) {
            for (auto u : bwd_uids) pack[u] = ptrs[u];
        } else {
            for (auto u : fwd_uids) pack[u] = ptrs[u];
        }
        if (d->ragged) {
            for (auto u : {SEQ_Q, SEQ_KV, OFF_Q, OFF_KV, OFF_STATS}) pack[u] = ptrs[u];
        }
        for (auto &kv : pack) {
            if (!kv.second) return fail("null device pointer for tensor uid " + std::to_string(kv.first));
        }
        auto r = e->g->execute(g_handle, pack, workspace);
        if (!r.is_good()) return fail("execute: " + r.get_message());
    } catch (const std::exception &ex) {
        return fail(ex.what());
    }
    return 0;
}
}
