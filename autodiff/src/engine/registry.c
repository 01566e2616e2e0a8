/* registry.c -- find ops by name: a uthash table of descriptors, owned by
 * the caller, holding the built-ins and any custom ops. */
#include "internal.h"
#include "uthash_config.h"

#include <stdio.h>

typedef struct entry {
    const ad_opdef *def;
    UT_hash_handle hh; /* key: def->name */
} entry;

struct ad_registry {
    ad__mem mem;
    entry *ops;
    char msg[AD__MSG_CAP];
};

static int put(ad_registry *r, const ad_opdef *def)
{
    ad__mem *uthash_mem = &r->mem;
    bool uthash_oom = false;
    entry *e = ad__alloc(uthash_mem, sizeof *e);
    if (!e)
        return AD_ENOMEM;
    memset(e, 0, sizeof *e);
    e->def = def;
    HASH_ADD_KEYPTR(hh, r->ops, def->name, strlen(def->name), e);
    if (uthash_oom) {
        ad__free(uthash_mem, e, sizeof *e);
        return AD_ENOMEM;
    }
    return AD_OK;
}

ad_registry *ad_registry_new(ad_alloc_fn alloc, void *alloc_ud)
{
    ad__mem mem = {alloc ? alloc : ad__default_alloc, alloc ? alloc_ud : NULL, 0};
    ad_registry *r = ad__alloc(&mem, sizeof *r);
    if (!r)
        return NULL;
    memset(r, 0, sizeof *r);
    r->mem = mem;
    for (size_t i = 0; i < ad_builtin_count(); i++)
        if (put(r, ad_builtin_op(i)) != AD_OK) {
            ad_registry_free(r);
            return NULL;
        }
    return r;
}

void ad_registry_free(ad_registry *r)
{
    if (!r)
        return;
    ad__mem *uthash_mem = &r->mem;
    entry *e, *tmp;
    HASH_ITER(hh, r->ops, e, tmp) {
        HASH_DEL(r->ops, e);
        ad__free(uthash_mem, e, sizeof *e);
    }
    ad__mem mem = r->mem;
    ad__free(&mem, r, sizeof *r);
}

static int reg_fail(ad_registry *r, int status, const char *fmt, const char *name)
{
    snprintf(r->msg, sizeof r->msg, fmt, name);
    return status;
}

int ad_registry_add(ad_registry *r, const ad_opdef *def)
{
    if (!r)
        return AD_EMISUSE;
    r->msg[0] = '\0';
    if (!def)
        return reg_fail(r, AD_EMISUSE, "registry_add: op descriptor is NULL%s", "");
    if (!def->name || !def->name[0])
        return reg_fail(r, AD_EMISUSE, "registry_add: op has no name%s", "");
    if (def->arity < 1 || def->arity > AD_MAX_ARITY)
        return reg_fail(r, AD_EMISUSE, "registry_add: op '%s' has an arity outside 1..4",
                        def->name);
    if (!def->forward || !def->vjp)
        return reg_fail(r, AD_EMISUSE, "registry_add: op '%s' needs both forward and vjp",
                        def->name);
    if (ad_registry_find(r, def->name))
        return reg_fail(r, AD_EEXIST, "registry_add: an op named '%s' is already registered",
                        def->name);
    if (put(r, def) != AD_OK)
        return reg_fail(r, AD_ENOMEM, "registry_add: out of memory adding '%s'", def->name);
    return AD_OK;
}

const ad_opdef *ad_registry_find(const ad_registry *r, const char *name)
{
    if (!name)
        return NULL;
    if (!r) {
        for (size_t i = 0; i < ad_builtin_count(); i++)
            if (strcmp(ad_builtin_op(i)->name, name) == 0)
                return ad_builtin_op(i);
        return NULL;
    }
    entry *e;
    HASH_FIND_STR(r->ops, name, e);
    return e ? e->def : NULL;
}

const char *ad_registry_errmsg(const ad_registry *r) { return r ? r->msg : "registry is NULL"; }
