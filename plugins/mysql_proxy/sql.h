/* mysql_proxy: a small SQL scanner that finds, for each statement of a
 * COM_QUERY, the operation(s) and the tables it touches (SELECT / INSERT /
 * REPLACE / UPDATE / DELETE / TRUNCATE / CREATE / DROP / ALTER / SHOW, joins,
 * subqueries, db.table names, several statements separated by ';') and USE.
 * Pure and bounded: at most SQL_MAX_TABLES tables, names cut at SQL_NAME_MAX. */
#ifndef HERALD_PLUGIN_MYSQL_SQL_H
#define HERALD_PLUGIN_MYSQL_SQL_H

#include <stdbool.h>
#include <stddef.h>

#define SQL_OP_SELECT 0x01u
#define SQL_OP_INSERT 0x02u
#define SQL_OP_UPDATE 0x04u
#define SQL_OP_DELETE 0x08u
#define SQL_OP_CREATE 0x10u
#define SQL_OP_DROP 0x20u
#define SQL_OP_ALTER 0x40u
#define SQL_OP_SHOW 0x80u

#define SQL_MAX_TABLES 32
#define SQL_NAME_MAX 130   /* "table.db" with 64-byte parts */

struct sql_table {
    char db[SQL_NAME_MAX];      /* "" when not qualified */
    char name[SQL_NAME_MAX];
    unsigned ops;               /* SQL_OP_* */
};

struct sql_result {
    struct sql_table tables[SQL_MAX_TABLES];
    size_t ntables;
    size_t nstatements;
    char use_db[SQL_NAME_MAX];  /* the last USE's database, or "" */
};

/* 0, or -1 when the text is not SQL this scanner understands (unterminated
 * quote or comment, unbalanced parentheses, unknown statement, empty). */
int sql_parse(const char *q, size_t len, struct sql_result *r);
/* "select,insert" for ops into out; returns out. */
char *sql_ops_str(unsigned ops, char *out, size_t size);

#endif
