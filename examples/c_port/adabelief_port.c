/*
 * adabelief_port.c - MXNet 2.x's AdaBelief update in C99, speaking the conformance suite's
 * out-of-process protocol (spec/protocol.md, version 1): JSON lines on stdin, JSON lines on
 * stdout, every float as a C99 hex string.
 *
 * Build:  cc -std=c99 -O2 -ffp-contract=off -o adabelief_port adabelief_port.c -lm
 *
 * Profiles: mxnet, mxnet-doc.  Dtypes: float32, float64, float16-mp.
 * The arithmetic follows MXNet: the Python optimizer computes lr * lr_mult, wd * wd_mult and the
 * bias-corrected step size in double, then the kernel gets them (and beta1, beta2, epsilon,
 * rescale_grad, clip_gradient) rounded to its compute type and does every element operation in
 * that type. -ffp-contract=off keeps the compiler from fusing a*b+c into an FMA (which would also
 * conform, but this port wants to be the plain, operation-by-operation evaluation).
 *
 * No external libraries: a small JSON parser for the fixed message shapes is included below.
 */

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* float arithmetic must be done in float, not in a wider x87 register (double rounding). */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "needs FLT_EVAL_METHOD == 0 (on 32-bit x86 add -msse2 -mfpmath=sse)"
#endif

#define PORT_NAME "adabelief-c-port"
#define PORT_VERSION "0.1.0"
#define MAX_DEPTH 64

/* ===== a minimal JSON parser ================================================================
 * The whole line is parsed into a tree of nodes kept in one growable array and linked by index
 * (first child, next sibling), so a realloc never invalidates a link. Strings are unescaped in
 * place in the line buffer and NUL-terminated there.
 */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct {
    jtype type;
    const char *text; /* J_STR: the string; J_NUM: start of the number's text */
    int boolean;
    int first, next;  /* first child (arrays, objects) and next sibling, -1 for none */
    const char *key;  /* member name when the parent is an object */
} jnode;

typedef struct {
    char *p;
    jnode *nodes;
    int n, cap;
    const char *err;
} jparser;

static int jnew(jparser *ps, jtype type) {
    if (ps->n == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 256;
        jnode *grown = (jnode *)realloc(ps->nodes, (size_t)cap * sizeof(jnode));
        if (!grown) {
            ps->err = "out of memory";
            return -1;
        }
        ps->nodes = grown;
        ps->cap = cap;
    }
    ps->nodes[ps->n].type = type;
    ps->nodes[ps->n].text = NULL;
    ps->nodes[ps->n].boolean = 0;
    ps->nodes[ps->n].first = -1;
    ps->nodes[ps->n].next = -1;
    ps->nodes[ps->n].key = NULL;
    return ps->n++;
}

static void skip_ws(jparser *ps) {
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r' || *ps->p == '\n') ps->p++;
}

static int hex4(const char *s) {
    int v = 0, i;
    for (i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

static char *put_utf8(char *out, unsigned long cp) {
    if (cp < 0x80) {
        *out++ = (char)cp;
    } else if (cp < 0x800) {
        *out++ = (char)(0xC0 | (cp >> 6));
        *out++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *out++ = (char)(0xE0 | (cp >> 12));
        *out++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *out++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *out++ = (char)(0xF0 | (cp >> 18));
        *out++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *out++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *out++ = (char)(0x80 | (cp & 0x3F));
    }
    return out;
}

/* Parse a string at ps->p (on the opening quote); return its unescaped text, in place. */
static const char *parse_string(jparser *ps) {
    char *in = ps->p + 1, *out = ps->p + 1;
    const char *start = out;
    for (;;) {
        char c = *in++;
        if (c == '"') break;
        if (c == '\0' || (unsigned char)c < 0x20) {
            ps->err = "unterminated string";
            return NULL;
        }
        if (c != '\\') {
            *out++ = c;
            continue;
        }
        c = *in++;
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '/': *out++ = '/'; break;
        case 'b': *out++ = '\b'; break;
        case 'f': *out++ = '\f'; break;
        case 'n': *out++ = '\n'; break;
        case 'r': *out++ = '\r'; break;
        case 't': *out++ = '\t'; break;
        case 'u': {
            int hi = hex4(in);
            unsigned long cp;
            if (hi < 0) {
                ps->err = "bad \\u escape";
                return NULL;
            }
            in += 4;
            cp = (unsigned long)hi;
            if (hi >= 0xD800 && hi < 0xDC00 && in[0] == '\\' && in[1] == 'u') {
                int lo = hex4(in + 2);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + (((unsigned long)hi - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
                    in += 6;
                }
            }
            out = put_utf8(out, cp); /* never longer than the escape it replaces */
            break;
        }
        default:
            ps->err = "bad escape";
            return NULL;
        }
    }
    *out = '\0'; /* out <= the closing quote, which has been consumed */
    ps->p = in;
    return start;
}

static int parse_value(jparser *ps, int depth);

static int parse_container(jparser *ps, int depth, jtype type) {
    char close = type == J_ARR ? ']' : '}';
    int node = jnew(ps, type), last = -1;
    if (node < 0) return -1;
    ps->p++;
    skip_ws(ps);
    if (*ps->p == close) {
        ps->p++;
        return node;
    }
    for (;;) {
        const char *key = NULL;
        int child;
        skip_ws(ps);
        if (type == J_OBJ) {
            if (*ps->p != '"') {
                ps->err = "expected a member name";
                return -1;
            }
            if (!(key = parse_string(ps))) return -1;
            skip_ws(ps);
            if (*ps->p != ':') {
                ps->err = "expected ':'";
                return -1;
            }
            ps->p++;
        }
        child = parse_value(ps, depth + 1);
        if (child < 0) return -1;
        ps->nodes[child].key = key;
        if (last < 0) ps->nodes[node].first = child;
        else ps->nodes[last].next = child;
        last = child;
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == close) {
            ps->p++;
            return node;
        }
        ps->err = type == J_ARR ? "expected ',' or ']'" : "expected ',' or '}'";
        return -1;
    }
}

static int parse_value(jparser *ps, int depth) {
    int node;
    if (depth > MAX_DEPTH) {
        ps->err = "nested too deeply";
        return -1;
    }
    skip_ws(ps);
    switch (*ps->p) {
    case '{': return parse_container(ps, depth, J_OBJ);
    case '[': return parse_container(ps, depth, J_ARR);
    case '"':
        node = jnew(ps, J_STR);
        if (node < 0) return -1;
        ps->nodes[node].text = parse_string(ps);
        return ps->nodes[node].text ? node : -1;
    case 't':
    case 'f':
    case 'n': {
        const char *word = *ps->p == 't' ? "true" : *ps->p == 'f' ? "false" : "null";
        size_t len = strlen(word);
        if (strncmp(ps->p, word, len) != 0) {
            ps->err = "bad literal";
            return -1;
        }
        node = jnew(ps, *ps->p == 'n' ? J_NULL : J_BOOL);
        if (node < 0) return -1;
        ps->nodes[node].boolean = *ps->p == 't';
        ps->p += len;
        return node;
    }
    default: {
        char *q = ps->p;
        if (*q == '-') q++;
        if (*q < '0' || *q > '9') {
            ps->err = "unexpected character";
            return -1;
        }
        while (*q >= '0' && *q <= '9') q++;
        if (*q == '.') {
            q++;
            while (*q >= '0' && *q <= '9') q++;
        }
        if (*q == 'e' || *q == 'E') {
            q++;
            if (*q == '+' || *q == '-') q++;
            while (*q >= '0' && *q <= '9') q++;
        }
        node = jnew(ps, J_NUM);
        if (node < 0) return -1;
        ps->nodes[node].text = ps->p;
        ps->p = q;
        return node;
    }
    }
}

static jnode *J(jparser *ps, int i) { return &ps->nodes[i]; }

static int jget(jparser *ps, int obj, const char *key) {
    int c;
    if (obj < 0 || J(ps, obj)->type != J_OBJ) return -1;
    for (c = J(ps, obj)->first; c >= 0; c = J(ps, c)->next)
        if (strcmp(J(ps, c)->key, key) == 0) return c;
    return -1;
}

static size_t jlen(jparser *ps, int arr) {
    size_t n = 0;
    int c;
    for (c = J(ps, arr)->first; c >= 0; c = J(ps, c)->next) n++;
    return n;
}

/* ===== reading requests ===================================================================== */

static char errbuf[256];

/* The length of a number's text (its end is where JSON's number grammar ends). */
static size_t num_len(const char *s) {
    size_t n = 0;
    while (s[n] && strchr("+-0123456789.eE", s[n])) n++;
    return n;
}

static int get_hex(jparser *ps, int node, double *out, const char *field) {
    char *end;
    if (node < 0 || J(ps, node)->type != J_STR || !*J(ps, node)->text) {
        sprintf(errbuf, "%.200s: expected a hex float string", field);
        return 0;
    }
    *out = strtod(J(ps, node)->text, &end); /* C99 strtod reads %a output, inf and nan */
    if (*end) {
        sprintf(errbuf, "%.200s: not a hex float", field);
        return 0;
    }
    return 1;
}

/* A hexarray of exactly n values (n == 0: any length; the length is stored in *count). */
static double *get_array(jparser *ps, int node, size_t n, size_t *count, const char *field) {
    double *a;
    size_t len, j = 0;
    int c;
    if (node < 0 || J(ps, node)->type != J_ARR) {
        sprintf(errbuf, "%.200s: expected an array", field);
        return NULL;
    }
    len = jlen(ps, node);
    if (count) *count = len;
    else if (len != n) {
        sprintf(errbuf, "%.200s: expected %lu values, got %lu", field, (unsigned long)n,
                (unsigned long)len);
        return NULL;
    }
    a = (double *)malloc((len ? len : 1) * sizeof(double));
    if (!a) {
        sprintf(errbuf, "out of memory");
        return NULL;
    }
    for (c = J(ps, node)->first; c >= 0; c = J(ps, c)->next, j++) {
        if (!get_hex(ps, c, &a[j], field)) {
            free(a);
            return NULL;
        }
    }
    return a;
}

typedef struct {
    double lr, beta1, beta2, epsilon, wd, clip;
    int correct_bias, has_clip, doc; /* doc: profile mxnet-doc */
} hyper_t;

typedef struct {
    size_t n;
    double *w, *m, *s; /* values of the case's dtypes, held exactly in double */
    double t, lr_mult, wd_mult;
} param_t;

/* ===== the update =========================================================================== */

/* Round to the nearest float16 value, ties to even (the w16 copy of float16-mp). */
static double to_half(double x) {
    double a = fabs(x), r;
    int e, q;
    if (x != x || a == 0 || isinf(x)) return x;
    if (a >= 65520.0) return x > 0 ? HUGE_VAL : -HUGE_VAL; /* halfway past 65504 rounds up */
    frexp(a, &e);                                        /* a = f * 2^e, f in [0.5, 1) */
    q = (e - 1 < -14 ? -14 : e - 1) - 10;                /* exponent of a's float16 ulp */
    r = ldexp(nearbyint(ldexp(a, -q)), q);               /* exact scaling; nearest-even */
    return x < 0 ? -r : r;
}

/* One parameter, one step, every element in compute type T. The scalars arrive as doubles and
 * are rounded to T once, as MXNet's Python layer hands them to the kernel. */
#define DEFINE_UPDATE(NAME, T, SQRT)                                                          \
    static void NAME(const hyper_t *h, double eta_d, double wd_d, double rescale_d,          \
                     param_t *p, const double *grad) {                                      \
        const T eta = (T)eta_d, wd = (T)wd_d, rescale = (T)rescale_d;                       \
        const T b1 = (T)h->beta1, b2 = (T)h->beta2, eps = (T)h->epsilon, one = (T)1;         \
        const T clip = (T)h->clip;                                                            \
        const int clip_on = h->has_clip && h->clip > 0; /* NaN: off */                       \
        size_t j;                                                                             \
        for (j = 0; j < p->n; j++) {                                                          \
            T w = (T)p->w[j], m = (T)p->m[j], s = (T)p->s[j], g = (T)grad[j], r;             \
            if (h->doc) { /* clip the rescaled gradient, then add weight decay */             \
                g = rescale * g;                                                              \
                if (clip_on) g = g > clip ? clip : g < -clip ? -clip : g;                     \
                g = g + wd * w;                                                               \
            } else { /* MXNet's kernels: weight decay first, then clip */                     \
                g = rescale * g + wd * w;                                                     \
                if (clip_on) g = g > clip ? clip : g < -clip ? -clip : g;                     \
            }                                                                                 \
            m = b1 * m + (one - b1) * g;                                                      \
            r = g - m;                                                                        \
            s = b2 * s + (one - b2) * (r * r) + eps;                                          \
            w = w - eta * (m / (SQRT(s) + eps));                                              \
            p->w[j] = w;                                                                      \
            p->m[j] = m;                                                                      \
            p->s[j] = s;                                                                      \
        }                                                                                     \
    }

DEFINE_UPDATE(update_f32, float, sqrtf)
DEFINE_UPDATE(update_f64, double, sqrt)

/* ===== writing answers ====================================================================== */

static void put_hex(double x) {
    if (x != x) fputs("\"nan\"", stdout); /* glibc's %a would say -nan for some NaNs */
    else if (isinf(x)) fputs(x > 0 ? "\"inf\"" : "\"-inf\"", stdout);
    else printf("\"%a\"", x);
}

static void put_array(const char *name, const double *a, size_t n, int to16) {
    size_t j;
    printf("\"%s\":[", name);
    for (j = 0; j < n; j++) {
        if (j) putchar(',');
        put_hex(to16 ? to_half(a[j]) : a[j]);
    }
    putchar(']');
}

static void put_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static void answer(const char *seq, const char *kind, const char *key, const char *text) {
    printf("{\"seq\":%.*s,\"%s\":{\"%s\":", (int)num_len(seq), seq, kind, key);
    put_json_string(text);
    printf("}}\n");
    fflush(stdout);
}

static void handshake(void) {
    printf("{\"implementation\":{\"name\":\"" PORT_NAME "\",\"version\":\"" PORT_VERSION "\","
           "\"language\":\"c\",\"profiles\":[\"mxnet\",\"mxnet-doc\"],"
           "\"dtypes\":[\"float32\",\"float64\",\"float16-mp\"]},\"version\":1}\n");
    fflush(stdout);
}

/* ===== one case ============================================================================= */

static void free_params(param_t *params, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        free(params[i].w);
        free(params[i].m);
        free(params[i].s);
    }
    free(params);
}

/* Read and check the whole case before writing anything, so an answer is never half a line. */
static void run_case(jparser *ps, int msg, const char *seq) {
    int c = jget(ps, msg, "case"), h, node, st, g;
    int dtype_node = jget(ps, c, "dtype"), profile_node = jget(ps, c, "profile");
    const char *dtype, *profile;
    hyper_t hp;
    param_t *params = NULL;
    size_t n_params = 0, n_steps = 0, i, k;
    double **grads = NULL, *rescale = NULL, rescale_default;
    char field[96];
    int f32, mp, ok = 0;

    if (dtype_node < 0 || J(ps, dtype_node)->type != J_STR || profile_node < 0 ||
        J(ps, profile_node)->type != J_STR) {
        answer(seq, "errored", "message", "case.dtype and case.profile must be strings");
        return;
    }
    dtype = J(ps, dtype_node)->text;
    profile = J(ps, profile_node)->text;
    if (strcmp(profile, "mxnet") != 0 && strcmp(profile, "mxnet-doc") != 0) {
        answer(seq, "skipped", "reason", "this port implements profiles mxnet and mxnet-doc");
        return;
    }
    f32 = strcmp(dtype, "float32") == 0;
    mp = strcmp(dtype, "float16-mp") == 0;
    if (!f32 && !mp && strcmp(dtype, "float64") != 0) {
        answer(seq, "skipped", "reason", "this port implements float32, float64 and float16-mp");
        return;
    }
    memset(&hp, 0, sizeof hp);
    hp.doc = strcmp(profile, "mxnet-doc") == 0;
    h = jget(ps, c, "hyperparameters");
    node = jget(ps, h, "correct_bias");
    if (node < 0 || J(ps, node)->type != J_BOOL) {
        answer(seq, "errored", "message", "case.hyperparameters.correct_bias must be a boolean");
        return;
    }
    hp.correct_bias = J(ps, node)->boolean;
    node = jget(ps, h, "clip_gradient");
    hp.has_clip = node >= 0 && J(ps, node)->type != J_NULL;
    if (!get_hex(ps, jget(ps, h, "learning_rate"), &hp.lr, "hyperparameters.learning_rate") ||
        !get_hex(ps, jget(ps, h, "beta1"), &hp.beta1, "hyperparameters.beta1") ||
        !get_hex(ps, jget(ps, h, "beta2"), &hp.beta2, "hyperparameters.beta2") ||
        !get_hex(ps, jget(ps, h, "epsilon"), &hp.epsilon, "hyperparameters.epsilon") ||
        !get_hex(ps, jget(ps, h, "wd"), &hp.wd, "hyperparameters.wd") ||
        !get_hex(ps, jget(ps, h, "rescale_grad"), &rescale_default, "hyperparameters.rescale_grad") ||
        (hp.has_clip && !get_hex(ps, node, &hp.clip, "hyperparameters.clip_gradient"))) {
        answer(seq, "errored", "message", errbuf);
        return;
    }

    node = jget(ps, c, "params");
    st = jget(ps, c, "steps");
    if (node < 0 || J(ps, node)->type != J_ARR || st < 0 || J(ps, st)->type != J_ARR) {
        answer(seq, "errored", "message", "case.params and case.steps must be arrays");
        return;
    }
    n_params = jlen(ps, node);
    n_steps = jlen(ps, st);
    params = (param_t *)calloc(n_params ? n_params : 1, sizeof(param_t));
    grads = (double **)calloc(n_steps * n_params + 1, sizeof(double *));
    rescale = (double *)calloc(n_steps + 1, sizeof(double));
    if (!params || !grads || !rescale) {
        answer(seq, "errored", "message", "out of memory");
        goto done;
    }
    for (i = 0, node = J(ps, node)->first; node >= 0; node = J(ps, node)->next, i++) {
        param_t *p = &params[i];
        int t = jget(ps, node, "t");
        double tv;
        if (t < 0 || J(ps, t)->type != J_NUM || (tv = strtod(J(ps, t)->text, NULL)) < 0 ||
            tv != floor(tv)) {
            sprintf(errbuf, "params[%lu].t: expected a non-negative integer", (unsigned long)i);
            answer(seq, "errored", "message", errbuf);
            goto done;
        }
        p->t = tv;
        sprintf(field, "params[%lu].w", (unsigned long)i);
        if (!(p->w = get_array(ps, jget(ps, node, "w"), 0, &p->n, field))) goto fail;
        sprintf(field, "params[%lu].m", (unsigned long)i);
        if (!(p->m = get_array(ps, jget(ps, node, "m"), p->n, NULL, field))) goto fail;
        sprintf(field, "params[%lu].s", (unsigned long)i);
        if (!(p->s = get_array(ps, jget(ps, node, "s"), p->n, NULL, field))) goto fail;
        sprintf(field, "params[%lu].lr_mult", (unsigned long)i);
        if (!get_hex(ps, jget(ps, node, "lr_mult"), &p->lr_mult, field)) goto fail;
        sprintf(field, "params[%lu].wd_mult", (unsigned long)i);
        if (!get_hex(ps, jget(ps, node, "wd_mult"), &p->wd_mult, field)) goto fail;
    }
    for (k = 0, st = J(ps, st)->first; st >= 0; st = J(ps, st)->next, k++) {
        int gs = jget(ps, st, "grads");
        sprintf(field, "steps[%lu].rescale_grad", (unsigned long)k);
        if (!get_hex(ps, jget(ps, st, "rescale_grad"), &rescale[k], field)) goto fail;
        if (gs < 0 || J(ps, gs)->type != J_ARR || jlen(ps, gs) != n_params) {
            sprintf(errbuf, "steps[%lu].grads: expected one array per parameter", (unsigned long)k);
            goto fail;
        }
        for (i = 0, g = J(ps, gs)->first; g >= 0; g = J(ps, g)->next, i++) {
            sprintf(field, "steps[%lu].grads[%lu]", (unsigned long)k, (unsigned long)i);
            if (!(grads[k * n_params + i] = get_array(ps, g, params[i].n, NULL, field))) goto fail;
        }
    }

    /* Everything is read: compute and stream the answer, one step at a time. */
    printf("{\"seq\":%.*s,\"results\":[", (int)num_len(seq), seq);
    for (k = 0; k < n_steps; k++) {
        /* MXNet (profile mxnet) skips the whole update when rescale_grad is 0 or not finite;
         * the update count still advances. */
        int skip = !hp.doc && (rescale[k] == 0 || !isfinite(rescale[k]));
        printf(k ? ",[" : "[");
        for (i = 0; i < n_params; i++) {
            param_t *p = &params[i];
            p->t += 1;
            if (!skip) {
                double lr_i = hp.lr * p->lr_mult, wd_i = hp.wd * p->wd_mult, eta = lr_i;
                if (hp.correct_bias) { /* in double, as MXNet's Python optimizer does */
                    double c1 = 1.0 - pow(hp.beta1, p->t), c2 = 1.0 - pow(hp.beta2, p->t);
                    eta = lr_i * (sqrt(c2) / c1);
                }
                if (f32 || mp) update_f32(&hp, eta, wd_i, rescale[k], p, grads[k * n_params + i]);
                else update_f64(&hp, eta, wd_i, rescale[k], p, grads[k * n_params + i]);
            }
            printf(i ? ",{" : "{");
            put_array("w", p->w, p->n, 0);
            putchar(',');
            put_array("m", p->m, p->n, 0);
            putchar(',');
            put_array("s", p->s, p->n, 0);
            if (mp) {
                putchar(',');
                put_array("w16", p->w, p->n, 1);
            }
            putchar('}');
        }
        putchar(']');
    }
    printf("]}\n");
    fflush(stdout);
    ok = 1;
fail:
    if (!ok) answer(seq, "errored", "message", errbuf);
done:
    if (grads)
        for (i = 0; i < n_steps * n_params; i++) free(grads[i]);
    free(grads);
    free(rescale);
    if (params) free_params(params, n_params);
}

/* ===== the loop ============================================================================= */

/* One line of any length from f, without its newline; NULL at end of input. */
static char *read_line(FILE *f, size_t *cap, char *buf) {
    size_t len = 0;
    int ch;
    while ((ch = getc(f)) != EOF && ch != '\n') {
        if (len + 1 >= *cap) {
            size_t grown = *cap ? 2 * *cap : 65536;
            char *b = (char *)realloc(buf, grown);
            if (!b) {
                free(buf);
                return NULL;
            }
            buf = b;
            *cap = grown;
        }
        buf[len++] = (char)ch;
    }
    if (ch == EOF && len == 0) {
        free(buf);
        return NULL;
    }
    if (!buf) buf = (char *)malloc(*cap = 1);
    if (buf) buf[len] = '\0';
    return buf;
}

int main(void) {
    char *line = NULL;
    size_t cap = 0;
    jparser ps;
    memset(&ps, 0, sizeof ps);
    while ((line = read_line(stdin, &cap, line)) != NULL) {
        int msg, cmd, seq;
        ps.p = line;
        ps.n = 0;
        ps.err = NULL;
        skip_ws(&ps);
        if (!*ps.p) continue; /* blank line */
        msg = parse_value(&ps, 0);
        if (msg >= 0) {
            skip_ws(&ps);
            if (*ps.p) {
                ps.err = "trailing characters";
                msg = -1;
            }
        }
        if (msg < 0) {
            fprintf(stderr, PORT_NAME ": ignoring a line that is not JSON (%s)\n", ps.err);
            continue;
        }
        cmd = jget(&ps, msg, "cmd");
        seq = jget(&ps, msg, "seq");
        if (cmd < 0 || J(&ps, cmd)->type != J_STR) {
            fprintf(stderr, PORT_NAME ": ignoring a message without \"cmd\"\n");
        } else if (strcmp(J(&ps, cmd)->text, "start") == 0) {
            handshake();
        } else if (strcmp(J(&ps, cmd)->text, "stop") == 0) {
            break;
        } else if (seq < 0 || J(&ps, seq)->type != J_NUM) {
            fprintf(stderr, PORT_NAME ": ignoring a request without a numeric \"seq\"\n");
        } else if (strcmp(J(&ps, cmd)->text, "run") == 0) {
            run_case(&ps, msg, J(&ps, seq)->text);
        } else {
            answer(J(&ps, seq)->text, "errored", "message", "unknown command");
        }
    }
    free(line);
    free(ps.nodes);
    return 0;
}
