/*
 * adgrad.h -- the parts of the adgrad command-line program (tools/adgrad).
 *
 * adgrad is written only on the public API of autodiff (autodiff.h and
 * check.h). Its pieces:
 *   parse.c      the expression language: lexer and recursive-descent
 *                parser into a syntax tree (adgrad_parse). Pure: no tape,
 *                no I/O; every input gives a tree or an error, never a
 *                crash or a leak (fuzzed by tests/fuzz/fuzz_adgrad_parse.c).
 *   functions.c  the table of functions callable by name (every op of
 *                autodiff.h: one line each).
 *   eval.c       the model (which names are inputs, which statements
 *                compute) and the recording of a tree on a tape.
 *   main.c       the command line, output, checks.
 *   util.c       strings, numbers, JSON.
 */
#ifndef ADGRAD_ADGRAD_H
#define ADGRAD_ADGRAD_H

#include <autodiff/autodiff.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Limits that keep every input inside bounded recursion and memory. */
#define ADGRAD_MAX_DEPTH 200     /* nesting of brackets and unary operators */
#define ADGRAD_MAX_HEIGHT 2000   /* height of a syntax tree (a + b + ... chains) */
#define ADGRAD_MAX_NAME 63       /* bytes of a name                        */
#define ADGRAD_MAX_LIT_EXPR 256  /* elements of a literal that are not numbers */
#define ADGRAD_MSG_CAP 512

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/* An error with the place it was found: line and column (1-based, columns
 * in characters) of the text that was parsed; 0 when there is no place. */
typedef struct adgrad_error {
    int line, col;
    char msg[ADGRAD_MSG_CAP];
    char note[ADGRAD_MSG_CAP]; /* a second line ("operands: ..."), or "" */
} adgrad_error;

/* Sets err (when not NULL) and returns 1. */
int adgrad_fail(adgrad_error *err, int line, int col, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* ------------------------------------------------------------------ */
/* Syntax tree                                                         */
/* ------------------------------------------------------------------ */

enum adgrad_kind {
    AGX_NUM,  /* a number                                   */
    AGX_NAME, /* a name                                     */
    AGX_CALL, /* name(args)                                 */
    AGX_NEG,  /* -arg[0]                                    */
    AGX_BIN,  /* arg[0] op arg[1]                           */
    AGX_LIST, /* [arg, ...]: a vector or a matrix literal   */
    AGX_T     /* arg[0]ᵀ: transposed (a vector only inside a product) */
};

/* Binary operators (AGX_BIN op): the character, or one of these. */
enum {
    AGB_GE = 'G', /* >= */
    AGB_LE = 'L', /* <= */
    AGB_EQ = 'E', /* == */
    AGB_NE = 'N', /* != */
    AGB_CDOT = '.' /* the middle dot of the notes: * with a scalar, else @ */
};

typedef struct adgrad_func adgrad_func;

typedef struct adgrad_expr {
    int kind;
    int op;                 /* AGX_BIN: + - * / ^ @ > < AGB_GE ...            */
    int line, col;          /* the number, name, operator or bracket          */
    size_t begin, end;      /* byte span of the whole expression in the text  */
    double num;             /* AGX_NUM                                        */
    const char *name;       /* AGX_NAME, AGX_CALL                             */
    const adgrad_func *fn;  /* AGX_CALL: the table entry, or NULL for ...     */
    const ad_opdef *def;    /* ... a built-in op called by its registry name  */
    struct adgrad_expr **arg;
    int narg;
    int height;             /* 1 for a leaf; bounded by ADGRAD_MAX_HEIGHT      */
    int parens;             /* written in parentheses (the span holds them)    */
} adgrad_expr;

typedef struct adgrad_stmt {
    const char *name;       /* "z" in z = ...; NULL: an unnamed statement     */
    const char *of;         /* claims written dJ/dW = ...: "J"; else NULL     */
    int line, col;          /* of the name, or of the expression              */
    adgrad_expr *expr;
} adgrad_stmt;

typedef struct adgrad_arena adgrad_arena;

typedef struct adgrad_program {
    adgrad_arena *arena;    /* owns everything below                          */
    char *text;             /* a NUL-terminated copy of the source            */
    size_t len;
    adgrad_stmt *stmt;
    int nstmt;
} adgrad_program;

/* What adgrad_parse reads. */
enum {
    ADGRAD_PARSE_PROGRAM = 0, /* statements separated by ';' or new lines    */
    ADGRAD_PARSE_VALUE = 1,   /* a value: 7, 4,2,-5, 1,2;3,4 or a literal:
                                 one unnamed statement                      */
    ADGRAD_PARSE_CLAIM = 2    /* dW = expr or dJ/dW = expr: one statement   */
};

/* Parses len bytes of text (any bytes; no NUL needed). Returns 0 and a
 * program in *out (free it with adgrad_program_free), or nonzero with
 * *out NULL and the reason in *err. Never crashes; frees everything on
 * failure. */
int adgrad_parse(const char *text, size_t len, int mode, adgrad_program **out, adgrad_error *err);
/* adgrad_parse(text, len, ADGRAD_PARSE_PROGRAM, out, err): the fuzzing
 * entry point. */
int adgrad_parse_text(const char *text, size_t len, adgrad_program **out, adgrad_error *err);
void adgrad_program_free(adgrad_program *p);
/* A copy of s (n bytes) in the program's arena, NUL-terminated; NULL when
 * out of memory. */
char *adgrad_program_strdup(adgrad_program *p, const char *s, size_t n);

/* The value of an expression made only of numbers and + - * / ^ (no
 * names, calls or literals): 1 and *v, else 0. */
int adgrad_const_value(const adgrad_expr *e, double *v);
/* A literal made only of numbers -- a number, [..] or [[..], ..] -- gives
 * 1, its shape and, when vals is not NULL, its ad_shape_size(shape)
 * values (row-major); anything else 0. */
int adgrad_literal(const adgrad_expr *e, ad_shape *shape, double *vals);

/* The column (in characters) of byte offset off of text, and its line. */
void adgrad_position(const char *text, size_t off, int *line, int *col);

/* ------------------------------------------------------------------ */
/* Functions callable by name                                          */
/* ------------------------------------------------------------------ */

/* The arguments of a call, collected by the kinds of its spec. */
typedef struct adgrad_args {
    ad_node node[8];     /* 'n' arguments, in order                          */
    int nnode;
    double num[8];       /* 'd' and 'i' arguments, in order                  */
    int nnum;
    const uint32_t *idx; /* an 'I' argument: a list of whole numbers         */
    size_t nidx;
    const ad_node *many; /* 'N': one or more nodes                           */
    int nmany;
} adgrad_args;

struct adgrad_func {
    const char *name;
    /* One letter per argument: n a node (any expression), d a number, i a
     * whole number >= 0, I a list of them ([0, 2, 2]), N one or more
     * nodes (last); a letter followed by '?' may be left out (only at the
     * end). */
    const char *spec;
    /* the call: one of these */
    ad_node (*f1)(ad_tape *, ad_node);
    ad_node (*f2)(ad_tape *, ad_node, ad_node);
    ad_node (*f3)(ad_tape *, ad_node, ad_node, ad_node);
    ad_node (*f1c)(ad_tape *, ad_node, double);
    ad_node (*call)(ad_tape *, const adgrad_args *);
    const char *args; /* "(W, x)" */
    const char *help;
};

size_t adgrad_func_count(void);
const adgrad_func *adgrad_func_at(size_t i);
/* The entry called name (len bytes), or NULL. */
const adgrad_func *adgrad_func_find(const char *name, size_t len);
/* The number of arguments f takes: lo .. hi (INT_MAX: any number more). */
void adgrad_func_arity(const adgrad_func *f, int *lo, int *hi);
/* The kind of f's argument i (0-based, within the arity): 'n', 'd', 'i'
 * or 'I' ('N' arguments are 'n'). */
int adgrad_func_kind(const adgrad_func *f, int i);

/* The closest of the candidates to name (edit distance at most 2, or a
 * third of the name's length), or NULL. */
const char *adgrad_suggest(const char *name, const char *const *cand, size_t ncand);
/* The same over the function table and the built-in ops. */
const char *adgrad_suggest_function(const char *name);

/* ------------------------------------------------------------------ */
/* The model and its recording                                         */
/* ------------------------------------------------------------------ */

/* A name that is bound to a value: used in the text without being
 * computed by a statement, or given a literal there (W = [4, 2, -5]). */
typedef struct adgrad_input {
    const char *name;   /* in the program's arena                            */
    int stmt;           /* the statement giving its default value, or -1     */
    int line, col;      /* where it first appears                            */
    int has_value;
    ad_shape shape;
    double *value;      /* malloc'd: ad_shape_size(shape) doubles            */
} adgrad_input;

typedef struct adgrad_model {
    adgrad_program *prog;   /* not owned                                     */
    adgrad_input *in;
    int nin;
    const char **label;     /* nstmt: each statement's name (f, f1, ... for
                               unnamed ones), in the program's arena         */
    int *is_input;          /* nstmt: 1 for a statement giving an input's value */
} adgrad_model;

/* Finds the inputs and checks the names: duplicates, use before
 * definition. Values are not set (see adgrad_model_bind). */
int adgrad_model_init(adgrad_model *m, adgrad_program *prog, adgrad_error *err);
void adgrad_model_free(adgrad_model *m);
/* Index of the input called name, or -1. */
int adgrad_model_input(const adgrad_model *m, const char *name);
/* Index of the statement labelled name, or -1. */
int adgrad_model_stmt(const adgrad_model *m, const char *name);
/* Sets input i's value (copied). */
int adgrad_model_set(adgrad_model *m, int i, ad_shape shape, const double *vals);

/* Names visible to an expression, each with its node. */
typedef struct adgrad_scope {
    const char **name;
    ad_node *node;
    int n, cap;
} adgrad_scope;

int adgrad_scope_add(adgrad_scope *s, const char *name, ad_node node);
/* The node bound to name, or NULL. */
const ad_node *adgrad_scope_find(const adgrad_scope *s, const char *name);
void adgrad_scope_free(adgrad_scope *s);

/* Records e on t with the names of scope. name_nodes: give every op node
 * a name from its source text (for traces and graphs). Returns the node,
 * or nil with *err set (the place, the tape's message, the operands). */
ad_node adgrad_record_expr(ad_tape *t, const adgrad_program *p, const adgrad_expr *e,
                           const adgrad_scope *scope, int name_nodes, adgrad_error *err);

/* Records every statement of the model on t. in[i] is the node of input
 * i; shift (NULL, or nstmt nodes, nil where none) is added to a
 * statement's result before later statements see it. stmt_node receives
 * each statement's node (an input statement's is its input's node);
 * scope (NULL, or empty) receives every name. name_nodes: name the
 * statements' nodes and their operations. Returns 0, or 1 with *err. */
int adgrad_model_record(ad_tape *t, const adgrad_model *m, const ad_node *in, const ad_node *shift,
                        ad_node *stmt_node, adgrad_scope *scope, int name_nodes,
                        adgrad_error *err);

/* ------------------------------------------------------------------ */
/* Strings and numbers (util.c)                                        */
/* ------------------------------------------------------------------ */

typedef struct adgrad_buf {
    char *s;
    size_t len, cap;
    int oom;
} adgrad_buf;

void adgrad_buf_put(adgrad_buf *b, const char *s, size_t n);
void adgrad_buf_puts(adgrad_buf *b, const char *s);
void adgrad_buf_printf(adgrad_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void adgrad_buf_free(adgrad_buf *b);
/* "-4", "0.3333333333" (10 significant digits), "inf", "nan"; -0 is 0. */
void adgrad_buf_num(adgrad_buf *b, double v);
/* A number as JSON: the shortest form that reads back the same; null
 * for NaN and infinities. */
void adgrad_buf_json_num(adgrad_buf *b, double v);
/* A JSON string (quotes and escapes). */
void adgrad_buf_json_str(adgrad_buf *b, const char *s, size_t n);
/* Values of a shape: 7, (4, 2, -5), [[1, 2], [3, 4]]; with row_sep (not
 * NULL) between the rows of a matrix instead of ", ". */
void adgrad_buf_values(adgrad_buf *b, const double *v, ad_shape s, const char *row_sep);
void adgrad_buf_json_values(adgrad_buf *b, const double *v, ad_shape s);
/* "scalar", "vector(3)", "3x4". */
void adgrad_buf_shape(adgrad_buf *b, ad_shape s);
/* Two lines: line `line` of text (a window of it when long; control
 * bytes as '?') and a caret under column col, each indented by two
 * spaces. Any bytes, any line and column. */
void adgrad_show_place(adgrad_buf *b, const char *text, size_t len, int line, int col);
/* "a scalar", "a vector of length 3", "3x4": for messages. */
void adgrad_shape_words(char *buf, size_t cap, ad_shape s);

#endif /* ADGRAD_ADGRAD_H */
