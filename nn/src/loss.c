/* loss.c -- losses as tape ops (B = rows of a batch, 1 for one sample):
 *   half_sse: L = (1/2B) sum (yhat - y)^2      scale(sum(square(sub)))
 *   mse:      L = mean (yhat - y)^2            mean(square(sub))
 *   xent:     L = (1/B) sum_rows -y.log softmax(yhat)   scale(softmax_xent)
 * softmax_xent is the core's fused, log-sum-exp-stable op. */
#include "nn_internal.h"

const char *nn_loss_name(nn_loss loss)
{
    switch (loss) {
    case NN_LOSS_HALF_SSE: return "half_sse";
    case NN_LOSS_MSE: return "mse";
    case NN_LOSS_XENT: return "xent";
    default: return "unknown";
    }
}

int nn__loss(nn_model *m, ad_tape *t, nn_loss loss, ad_node yhat, ad_node y, uint32_t ranks,
             ad_node *out)
{
    *out = ad_nil();
    if (!m)
        return NN_EMISUSE;
    if ((unsigned)loss >= NN_LOSS_COUNT)
        return nn__fail(m->msg, NN_EMISUSE, "loss: unknown loss %d", (int)loss);
    const char *name = nn_loss_name(loss);
    if (!t)
        return nn__fail(m->msg, NN_EMISUSE, "loss %s: the tape is NULL", name);
    if (ad_tape_status(t) != AD_OK)
        return nn__fail(m->msg, nn__from_ad(ad_tape_status(t)), "loss %s: the tape already failed: %s",
                        name, ad_tape_errmsg(t));
    const ad_shape ps = ad_node_shape(t, yhat), ts = ad_node_shape(t, y);
    if (ps.ndim < 0 || ts.ndim < 0)
        return nn__fail(m->msg, NN_EMISUSE, "loss %s: the %s is not a valid node of this tape",
                        name, ps.ndim < 0 ? "prediction" : "target");
    char a[48], b[48];
    if (ps.ndim != ts.ndim || ps.rows != ts.rows || ps.cols != ts.cols)
        return nn__fail(m->msg, NN_ESHAPE, "loss %s: prediction is %s but target is %s", name,
                        nn__shape_str(ps, a, sizeof a), nn__shape_str(ts, b, sizeof b));
    /* A rank's share of a global batch of ranks x B rows: the same sums,
     * divided by the global count, so the ranks' gradients add up to the
     * global batch's (ranks 1: the plain loss, the same ops). */
    const double B = (double)ranks * (ps.ndim == 2 ? ps.rows : 1);
    ad_node L;
    switch (loss) {
    case NN_LOSS_HALF_SSE:
        L = ad_scale(t, ad_sum(t, ad_square(t, ad_sub(t, yhat, y))), 0.5 / B);
        break;
    case NN_LOSS_MSE:
        if (ranks == 1)
            L = ad_mean(t, ad_square(t, ad_sub(t, yhat, y)));
        else /* sum / (ranks B n) */
            L = ad_scale(t, ad_sum(t, ad_square(t, ad_sub(t, yhat, y))),
                         1.0 / (B * (double)ad_shape_size(ps) / (ps.ndim == 2 ? ps.rows : 1)));
        break;
    default:
        L = ad_scale(t, ad_softmax_xent(t, yhat, y), 1.0 / B);
        break;
    }
    if (ad_node_is_nil(L))
        return nn__fail(m->msg, nn__from_ad(ad_tape_status(t)), "loss %s: %s", name,
                        ad_tape_errmsg(t));
    *out = L;
    return NN_OK;
}

ad_node nn_model_loss(nn_model *m, ad_tape *t, nn_loss loss, ad_node yhat, ad_node y)
{
    ad_node out;
    nn__loss(m, t, loss, yhat, y, 1, &out);
    return out;
}
