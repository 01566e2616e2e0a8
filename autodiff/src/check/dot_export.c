/* dot_export.c -- the tape as a Graphviz DOT digraph.
 *
 * Leaves are boxes (variables blue, constants grey), ops are ellipses,
 * the output is drawn with a double border. Each label holds the node's
 * name and expression, its op and shape, and its value and gradient when
 * they are small. Edges run from inputs to the ops that use them. */
#include "check_internal.h"

#include <string.h>

#define DEFAULT_MAX_VALUES 12

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
                       size_t maxv)
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
    }

    ad__sb_printf(b, "  n%zu [", ad_node_index(t, nd));
    if (leaf)
        ad__sb_printf(b, "shape=box, style=filled, fillcolor=\"%s\", ",
                      ad_node_is_variable(t, nd) ? "#dbe9f6" : "#eeeeee");
    else
        ad__sb_puts(b, "shape=ellipse, ");
    if (is_output)
        ad__sb_puts(b, "peripheries=2, ");
    ad__sb_puts(b, "label=\"");
    if (tmp->buf)
        put_escaped(b, tmp->buf, tmp->len);
    ad__sb_puts(b, "\"];\n");
}

int ad_export_dot(const ad_tape *t, ad_node output, ad_write_fn write, void *ud,
                  const ad_print_opts *o)
{
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
        write_node(&b, &tmp, t, nd, i == oi, maxv);
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
