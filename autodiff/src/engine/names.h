/* names.h -- node names for traces and reports (a uthash table per tape). */
#ifndef AD_NAMES_H
#define AD_NAMES_H

#include "internal.h"

/* Drops every name (at reset and free). */
void ad__names_clear(ad_tape *t);

#endif
