/* names.c -- ad_set_name / ad_node_name: a uthash table keyed by node id. */
#include "names.h"
#include "uthash_config.h"

struct ad__name {
    uint32_t id;
    size_t len; /* bytes of text, including the NUL */
    char *text;
    UT_hash_handle hh;
};

static void drop(ad_tape *t, ad__name *e)
{
    ad__mem *uthash_mem = &t->mem;
    HASH_DEL(t->names, e);
    ad__free(uthash_mem, e->text, e->len);
    ad__free(uthash_mem, e, sizeof *e);
}

void ad__names_clear(ad_tape *t)
{
    ad__name *e, *tmp;
    HASH_ITER(hh, t->names, e, tmp) {
        drop(t, e);
    }
    t->names = NULL;
}

int ad_set_name(ad_tape *t, ad_node n, const char *name)
{
    if (!t)
        return AD_EMISUSE;
    if (!name || !ad__peek(t, n))
        return AD_EMISUSE;
    ad__mem *uthash_mem = &t->mem;
    bool uthash_oom = false;
    size_t len = strlen(name) + 1;
    char *text = ad__alloc(uthash_mem, len);
    if (!text)
        return AD_ENOMEM;
    memcpy(text, name, len);

    ad__name *e;
    uint32_t id = n.id_;
    HASH_FIND(hh, t->names, &id, sizeof id, e);
    if (e) { /* rename */
        ad__free(uthash_mem, e->text, e->len);
        e->text = text;
        e->len = len;
        return AD_OK;
    }
    e = ad__alloc(uthash_mem, sizeof *e);
    if (!e) {
        ad__free(uthash_mem, text, len);
        return AD_ENOMEM;
    }
    memset(e, 0, sizeof *e);
    e->id = id;
    e->text = text;
    e->len = len;
    HASH_ADD(hh, t->names, id, sizeof e->id, e);
    if (uthash_oom) {
        ad__free(uthash_mem, text, len);
        ad__free(uthash_mem, e, sizeof *e);
        return AD_ENOMEM;
    }
    return AD_OK;
}

const char *ad_node_name(const ad_tape *t, ad_node n)
{
    if (!ad__peek(t, n))
        return NULL;
    ad__name *e;
    uint32_t id = n.id_;
    HASH_FIND(hh, t->names, &id, sizeof id, e);
    return e ? e->text : NULL;
}

ad_node ad_named(ad_tape *t, ad_node n, const char *name)
{
    if (t && name && ad__peek(t, n))
        (void)ad_set_name(t, n, name); /* decoration: a failure is not an error */
    return n;
}
