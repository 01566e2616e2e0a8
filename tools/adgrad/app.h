/* app.h -- the state of one run of the adgrad program (main.c, check.c). */
#ifndef ADGRAD_APP_H
#define ADGRAD_APP_H

#include "adgrad.h"

#include <autodiff/check.h>

/* Exit statuses. */
#define EXIT_AGREE 0   /* ran; every check agrees                         */
#define EXIT_DIFFER 1  /* a claimed derivative or the gradient check differs */
#define EXIT_USAGE 2   /* usage, parse, shape or I/O error                 */

typedef struct binding {
    const char *name;   /* the input                                       */
    const char *value;  /* its text                                        */
    const char *origin; /* "--W" or "--set" as given, for messages         */
} binding;

typedef struct claim {
    const char *text;       /* as given to --check                          */
    char label[32];         /* "--check" or "--check 2"                      */
    adgrad_program *prog;   /* one statement: name "dW", of "J" or NULL      */
    int input;              /* the input it is about, or -1                  */
    int stmt;               /* else the statement                            */
    ad_shape shape;         /* of its target                                 */
} claim;

typedef struct app {
    /* options */
    const char **expr;
    int nexpr;
    const char *file;
    binding *bind;
    int nbind;
    const char *values_file;
    const char *of;
    const char *wrt_text;
    const char *dot;
    const char *hvp;
    int json, trace, quiet, gradcheck, jacobian, hessian;
    claim *claims;
    int nclaims;
    int points_set, points;
    unsigned long long seed;
    double atol, rtol, spread, step;

    /* the program */
    char *text;             /* the program's text (malloc'd)                */
    size_t text_len;
    adgrad_program *prog;
    adgrad_model model;

    /* the recording */
    ad_tape *t;
    ad_node *in;            /* model.nin: the input leaves (variables)      */
    ad_node *stmt;          /* prog->nstmt                                  */
    int out;                /* the output statement, or -1                  */
    int out_input;          /* or the output input (--of an input), or -1   */
    ad_node out_node;
    const char *out_label;
    int *wrt;               /* >= 0: input i; < 0: statement -1 - k          */
    int nwrt;

    /* what is printed at the end */
    adgrad_buf text_out;
    adgrad_buf json_out;
    int json_fields;
} app;

/* Prints an error at a place of a parsed text (program NULL: none) and
 * returns EXIT_USAGE. label: NULL for the program ("line 2, column 9"),
 * else the source's name ("--check 2, column 12"). */
int app_error(app *a, const char *label, const adgrad_program *src, const adgrad_error *err);
/* An error with no place. Returns EXIT_USAGE. */
int app_errorf(app *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Starts a JSON field: the comma and "key": */
void app_json_key(app *a, const char *key);

/* Element name: dW, dW[2], dW[1][0]. */
void app_elem_name(adgrad_buf *b, const char *prefix, const char *name, ad_shape s, size_t elem);

/* --check: parses and validates the claims (before anything is printed). */
int app_claims_prepare(app *a);
/* --check and --gradcheck: runs them; returns EXIT_AGREE, EXIT_DIFFER or
 * EXIT_USAGE. */
int app_claims_run(app *a);
int app_gradcheck_run(app *a);
void app_claims_free(app *a);

#endif /* ADGRAD_APP_H */
