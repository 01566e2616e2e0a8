/* dot_export.c -- the tape as a Graphviz DOT digraph.
 *
 * Leaves are boxes (variables blue, constants grey), ops are ellipses,
 * the output is drawn with a double border. Each label holds the node's
 * name and expression, its op and shape, and its value and gradient when
 * they are small. Edges run from inputs to the ops that use them. */
#include "check_internal.h"

#include <math.h>
#include <string.h>

#define DEFAULT_MAX_VALUES 12
#define BRIEF_VALUES 4 /* a tensor too large to show: its first values, then its norm */

/* "4, 2, -5, 1, ... (12 values, norm 7.8)": a tensor too large for a label. */
static void brief_values(ad__sb *b, const double *v, size_t sz)
{
    char num[40];
    double ss = 0;
    for (size_t i = 0; i < sz; i++)
        ss += v[i] * v[i];
    for (size_t i = 0; i < sz && i < BRIEF_VALUES; i++)
        ad__sb_printf(b, "%s%s", i ? ", " : "", ad__num(v[i], 0, num, sizeof num));
    ad__sb_printf(b, ", ... (%zu values, norm %s)", sz, ad__num(sqrt(ss), 0, num, sizeof num));
}

/* Appends text to a DOT label, escaping what DOT treats specially. */
static void put_escaped(ad__sb *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"' || c == '\\')
            ad__sb_put(b, "\\", 1);
        if (c == '\n') {
            ad__sb_put(b, "\\n", 2);
            continue;
        }
        ad__sb_put(b, &c, 1);
    }
}

static void write_node(ad__sb *b, ad__sb *tmp, const ad_tape *t, ad_node nd, int is_output,
                       size_t maxv, int highlight)
{
    char nb[32], sb[32];
    const ad_opdef *def = ad_node_op(t, nd);
    const int leaf = !strcmp(def->name, "leaf");
    const ad_shape s = ad_node_shape(t, nd);
    const size_t sz = ad_shape_size(s);
    const double *g = ad_grad(t, nd);

    /* the label, as plain text lines, escaped at the end */
    tmp->len = 0;
    ad__sb_puts(tmp, ad__node_label(t, nd, nb, sizeof nb));
    if (!leaf) {
        ad__sb_puts(tmp, " = ");
        ad__node_expr(tmp, t, nd);
    }
    ad__sb_puts(tmp, "\n");
    if (leaf)
        ad__node_expr(tmp, t, nd); /* "variable" or "constant" */
    else
        ad__sb_puts(tmp, def->name);
    ad__sb_printf(tmp, ", %s", ad__shape_name(s, sb, sizeof sb));
    if (sz <= maxv) {
        ad__sb_puts(tmp, "\nvalue ");
        ad__sb_values(tmp, ad_value(t, nd), s);
        if (g) {
            ad__sb_puts(tmp, "\ngrad ");
            ad__sb_values(tmp, g, s);
        }
    } else {
        ad__sb_puts(tmp, "\nvalue ");
        brief_values(tmp, ad_value(t, nd), sz);
        if (g) {
            ad__sb_puts(tmp, "\ngrad ");
            brief_values(tmp, g, sz);
        }
    }

    ad__sb_printf(b, "  n%zu [", ad_node_index(t, nd));
    if (leaf)
        ad__sb_printf(b, "shape=box, style=filled, fillcolor=\"%s\", ",
                      ad_node_is_variable(t, nd) ? "#dbe9f6" : "#eeeeee");
    else
        ad__sb_puts(b, "shape=ellipse, ");
    if (is_output)
        ad__sb_puts(b, "peripheries=2, ");
    if (highlight)
        ad__sb_puts(b, "color=\"#d62728\", fontcolor=\"#d62728\", penwidth=2.5, ");
    ad__sb_puts(b, "label=\"");
    if (tmp->buf)
        put_escaped(b, tmp->buf, tmp->len);
    ad__sb_puts(b, "\"];\n");
}

int ad_export_dot(const ad_tape *t, ad_node output, ad_write_fn write, void *ud,
                  const ad_print_opts *o)
{
    return ad_export_dot_ex(t, output, write, ud, o, NULL);
}

int ad_export_dot_ex(const ad_tape *t, ad_node output, ad_write_fn write, void *ud,
                     const ad_print_opts *o, const ad_dot_opts *d)
{
    if (d && d->size < sizeof *d)
        return ad__print_fail(o, AD_EMISUSE,
                              "export_dot: dopts.size is %zu; set it to sizeof(ad_dot_opts) (%zu)",
                              d->size, sizeof *d);
    if (d && d->nhighlight && !d->highlight)
        return ad__print_fail(o, AD_EMISUSE,
                              "export_dot: dopts.highlight is NULL with nhighlight %zu",
                              d->nhighlight);
    for (size_t k = 0; t && d && k < d->nhighlight; k++)
        if (d->highlight[k] < 1 || d->highlight[k] >= ad_tape_len(t))
            return ad__print_fail(o, AD_EMISUSE,
                                  "export_dot: dopts.highlight[%zu] is %zu; the tape's nodes are "
                                  "1 .. %zu",
                                  k, d->highlight[k], ad_tape_len(t) - 1);
    if (!t || !write)
        return ad__print_fail(o, AD_EMISUSE, "export_dot: %s is NULL", t ? "write" : "tape");
    if (ad_tape_status(t) != AD_OK)
        return ad__print_fail(o, AD_EMISUSE, "export_dot: the tape holds an error: %s",
                              ad_tape_errmsg(t));
    const int whole = ad_node_is_nil(output);
    const size_t oi = whole ? 0 : ad_node_index(t, output);
    if (!whole && !oi)
        return ad__print_fail(o, AD_EMISUSE, "export_dot: the output is stale or of another tape");
    const size_t len = whole ? ad_tape_len(t) : oi + 1;
    const size_t maxv = o && o->max_values ? o->max_values : DEFAULT_MAX_VALUES;
    ad__cmem mem = ad__cmem_make(o ? o->alloc : NULL, o ? o->alloc_ud : NULL);

    /* Which nodes: all, or the output and what it depends on. */
    unsigned char *keep = NULL;
    if (!whole) {
        keep = ad__cmem_array(&mem, len, 1);
        if (!keep)
            return ad__print_fail(o, AD_ENOMEM, "export_dot: out of memory for %zu nodes", len);
        memset(keep, 0, len);
        keep[oi] = 1;
        for (size_t i = oi; i > 0; i--) {
            if (!keep[i])
                continue;
            ad_node in[AD_MAX_ARITY];
            int nin = ad_node_inputs(t, ad_tape_node(t, i), in);
            for (int k = 0; k < nin; k++)
                keep[ad_node_index(t, in[k])] = 1;
        }
    }

    ad__sb b, tmp;
    ad__sb_init(&b, mem);
    ad__sb_init(&tmp, mem);
    int st = AD_OK;
    ad__sb_puts(&b, "digraph tape {\n  rankdir=BT;\n  node [fontname=\"Helvetica\", "
                    "fontsize=10];\n");
    if (b.oom)
        st = ad__print_fail(o, AD_ENOMEM, "export_dot: out of memory");
    else
        write(ud, b.buf, b.len);
    for (size_t i = 1; i < len && st == AD_OK; i++) {
        if (keep && !keep[i])
            continue;
        ad_node nd = ad_tape_node(t, i), in[AD_MAX_ARITY];
        b.len = 0;
        int hl = 0;
        for (size_t k = 0; d && k < d->nhighlight && !hl; k++)
            hl = d->highlight[k] == i;
        write_node(&b, &tmp, t, nd, i == oi, maxv, hl);
        int nin = ad_node_inputs(t, nd, in);
        for (int k = 0; k < nin; k++)
            ad__sb_printf(&b, "  n%zu -> n%zu;\n", ad_node_index(t, in[k]), i);
        if (b.oom || tmp.oom)
            st = ad__print_fail(o, AD_ENOMEM, "export_dot: out of memory");
        else
            write(ud, b.buf, b.len);
    }
    if (st == AD_OK)
        write(ud, "}\n", 2);
    ad__sb_free(&b);
    ad__sb_free(&tmp);
    ad__cmem_free(&mem, keep, len);
    return st;
}

int ad_export_dot_fprint(FILE *f, const ad_tape *t, ad_node output, const ad_print_opts *o)
{
    if (!f)
        return ad__print_fail(o, AD_EMISUSE, "export_dot: the stream is NULL");
    return ad_export_dot(t, output, ad__file_write, f, o);
}
