/* mysql_proxy: operations and tables of SQL statements (see sql.h). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sql.h"

enum tok_kind { T_END = 0, T_WORD, T_QIDENT, T_STRING, T_NUM, T_PUNCT, T_ERROR };

struct tok {
    enum tok_kind kind;
    const char *p;
    size_t n;
    char c;                     /* T_PUNCT */
};

struct lexer {
    const char *s, *end;
};

static void skip_space(struct lexer *lx, bool *err)
{
    for (;;) {
        while (lx->s < lx->end && isspace((unsigned char)*lx->s))
            lx->s++;
        if (lx->s >= lx->end)
            return;
        size_t left = (size_t)(lx->end - lx->s);
        if (*lx->s == '#' || (left >= 2 && lx->s[0] == '-' && lx->s[1] == '-' &&
                              (left == 2 || isspace((unsigned char)lx->s[2])))) {
            while (lx->s < lx->end && *lx->s != '\n')
                lx->s++;
        } else if (left >= 2 && lx->s[0] == '/' && lx->s[1] == '*') {
            const char *e = NULL;
            for (const char *q = lx->s + 2; q + 1 < lx->end; q++)
                if (q[0] == '*' && q[1] == '/') {
                    e = q;
                    break;
                }
            if (!e) {
                *err = true;
                lx->s = lx->end;
                return;
            }
            lx->s = e + 2;
        } else {
            return;
        }
    }
}

static bool word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

static struct tok next(struct lexer *lx)
{
    struct tok t = {0};
    bool err = false;

    skip_space(lx, &err);
    if (err) {
        t.kind = T_ERROR;
        return t;
    }
    if (lx->s >= lx->end)
        return t;
    const char *s = lx->s;
    char c = *s;
    if (c == '\'' || c == '"' || c == '`') {
        const char *q = s + 1;
        for (;;) {
            if (q >= lx->end) {
                t.kind = T_ERROR;
                lx->s = lx->end;
                return t;
            }
            if (*q == '\\' && c != '`') {
                q += 2;
                continue;
            }
            if (*q == c) {
                if (q + 1 < lx->end && q[1] == c) { /* doubled quote */
                    q += 2;
                    continue;
                }
                break;
            }
            q++;
        }
        t.kind = c == '`' ? T_QIDENT : T_STRING;
        t.p = s + 1;
        t.n = (size_t)(q - s - 1);
        lx->s = q + 1;
        return t;
    }
    if (word_char(c)) {
        const char *q = s;
        while (q < lx->end && word_char(*q))
            q++;
        t.kind = isdigit((unsigned char)c) ? T_NUM : T_WORD;
        /* 1e5, 0x1f, 12abc: a word that starts with a digit is an identifier only if it has a letter */
        for (const char *x = s; t.kind == T_NUM && x < q; x++)
            if (!isdigit((unsigned char)*x))
                t.kind = T_WORD;
        t.p = s;
        t.n = (size_t)(q - s);
        lx->s = q;
        return t;
    }
    t.kind = T_PUNCT;
    t.c = c;
    t.p = s;
    t.n = 1;
    lx->s = s + 1;
    return t;
}

static bool is(const struct tok *t, const char *kw)
{
    return t->kind == T_WORD && strlen(kw) == t->n && strncasecmp(t->p, kw, t->n) == 0;
}

static bool is_punct(const struct tok *t, char c)
{
    return t->kind == T_PUNCT && t->c == c;
}

static const char *const not_alias[] = {
    "WHERE", "GROUP", "ORDER", "LIMIT", "HAVING", "UNION", "ON", "USING", "JOIN", "INNER", "LEFT", "RIGHT",
    "CROSS", "NATURAL", "STRAIGHT_JOIN", "FULL", "OUTER", "SET", "VALUES", "VALUE", "SELECT", "WINDOW",
    "FOR", "LOCK", "INTO", "PARTITION", "USE", "IGNORE", "FORCE", "LIKE", "RETURNING", "ON", "EXCEPT",
    "INTERSECT", "WITH", "PROCEDURE", "DEFAULT", "ADD", "DROP", "MODIFY", "CHANGE", "RENAME", "ENGINE",
    "TO", "FROM", "READ", "WRITE", "AS", "AUTO_INCREMENT", "CHARSET", "CHARACTER", "COLLATE", "COMMENT",
    "CASCADE", "RESTRICT", "WAIT", "NOWAIT", "TABLESAMPLE", NULL,
};

static bool keyword_in(const struct tok *t, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (is(t, list[i]))
            return true;
    return false;
}

struct parser {
    struct lexer lx;
    struct tok t;               /* current token */
    struct sql_result *r;
    int depth;
    bool err;
};

static void adv(struct parser *p)
{
    p->t = next(&p->lx);
    if (p->t.kind == T_ERROR)
        p->err = true;
}

static void copy_name(char *out, const struct tok *t)
{
    size_t n = t->n < SQL_NAME_MAX - 1 ? t->n : SQL_NAME_MAX - 1;
    memcpy(out, t->p, n);
    out[n] = 0;
}

static void add_table(struct sql_result *r, const char *db, const char *name, unsigned op)
{
    if (!*name || !strcasecmp(name, "dual"))
        return;
    for (size_t i = 0; i < r->ntables; i++) {
        if (!strcmp(r->tables[i].name, name) && !strcmp(r->tables[i].db, db)) {
            r->tables[i].ops |= op;
            return;
        }
    }
    if (r->ntables >= SQL_MAX_TABLES)
        return;
    struct sql_table *t = &r->tables[r->ntables++];
    snprintf(t->db, sizeof(t->db), "%s", db);
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->ops = op;
}

static bool ident(const struct tok *t)
{
    return t->kind == T_QIDENT || t->kind == T_WORD;
}

/* A table name at the current token ([db.]name), recorded with op. false if none. */
static bool table_name(struct parser *p, unsigned op)
{
    char a[SQL_NAME_MAX], b[SQL_NAME_MAX] = "";

    if (!ident(&p->t) || (p->t.kind == T_WORD && keyword_in(&p->t, not_alias)))
        return false;
    copy_name(a, &p->t);
    adv(p);
    if (is_punct(&p->t, '.')) {
        adv(p);
        if (!ident(&p->t)) {
            p->err = true;
            return false;
        }
        copy_name(b, &p->t);
        adv(p);
        add_table(p->r, a, b, op);
    } else {
        add_table(p->r, "", a, op);
    }
    return true;
}

static void skip_words(struct parser *p, const char *const *words)
{
    while (keyword_in(&p->t, words))
        adv(p);
}

/* A list of tables with aliases (FROM a x, b AS y JOIN c ON ...): records
 * them with op. JOINed tables get join_op. Stops at the first token that
 * is not part of the list. */
static void table_list(struct parser *p, unsigned op, unsigned join_op);

static void scan_until_end(struct parser *p, unsigned from_op);

static void paren_group(struct parser *p, unsigned from_op)
{
    /* at '(' */
    if (++p->depth > 200) {
        p->err = true;
        return;
    }
    adv(p);
    if (is(&p->t, "SELECT") || is(&p->t, "WITH") || is(&p->t, "VALUES")) {
        scan_until_end(p, SQL_OP_SELECT);
    } else {
        /* a function call or expression: FROM inside (EXTRACT(x FROM y)) is no table */
        while (!p->err && p->t.kind != T_END && !is_punct(&p->t, ')')) {
            if (is_punct(&p->t, '('))
                paren_group(p, from_op);
            else if (is(&p->t, "SELECT"))
                scan_until_end(p, SQL_OP_SELECT);
            else
                adv(p);
        }
    }
    if (!is_punct(&p->t, ')'))
        p->err = true;
    else
        adv(p);
    p->depth--;
}

static void table_list(struct parser *p, unsigned op, unsigned join_op)
{
    for (;;) {
        if (p->err)
            return;
        if (is_punct(&p->t, '(')) {
            /* derived table or (t1 JOIN t2) */
            if (++p->depth > 200) {
                p->err = true;
                return;
            }
            adv(p);
            if (is(&p->t, "SELECT") || is(&p->t, "WITH"))
                scan_until_end(p, SQL_OP_SELECT);
            else
                table_list(p, op, join_op);
            if (!is_punct(&p->t, ')')) {
                p->err = true;
                return;
            }
            adv(p);
            p->depth--;
        } else if (!table_name(p, op)) {
            return;
        }
        /* alias, index hints, partitions */
        if (is(&p->t, "AS"))
            adv(p);
        if (p->t.kind == T_QIDENT || (p->t.kind == T_WORD && !keyword_in(&p->t, not_alias)))
            adv(p);
        while ((is(&p->t, "USE") || is(&p->t, "FORCE") || is(&p->t, "IGNORE") || is(&p->t, "PARTITION"))) {
            while (!p->err && p->t.kind != T_END && !is_punct(&p->t, '('))
                adv(p);
            if (is_punct(&p->t, '('))
                paren_group(p, SQL_OP_SELECT);
        }
        if (is_punct(&p->t, ',')) {
            adv(p);
            continue;
        }
        /* joins: [NATURAL] [INNER|CROSS|LEFT|RIGHT|FULL] [OUTER] JOIN t [ON expr | USING (cols)] */
        static const char *const join_words[] = {"NATURAL", "INNER", "CROSS", "LEFT", "RIGHT", "FULL", "OUTER",
                                                 NULL};
        struct lexer save = p->lx;
        struct tok savet = p->t;
        skip_words(p, join_words);
        if (is(&p->t, "JOIN") || is(&p->t, "STRAIGHT_JOIN")) {
            adv(p);
            op = join_op;
            continue;
        }
        p->lx = save;
        p->t = savet;
        return;
    }
}

/* The rest of a statement (or subquery, up to its ')'): tables after FROM
 * and JOIN get from_op; subqueries are followed. */
static void scan_until_end(struct parser *p, unsigned from_op)
{
    while (!p->err && p->t.kind != T_END && !is_punct(&p->t, ';') && !is_punct(&p->t, ')')) {
        if (is(&p->t, "FROM") || is(&p->t, "JOIN") || is(&p->t, "STRAIGHT_JOIN")) {
            adv(p);
            table_list(p, from_op, SQL_OP_SELECT);
            from_op = SQL_OP_SELECT;
        } else if (is_punct(&p->t, '(')) {
            paren_group(p, SQL_OP_SELECT);
        } else {
            adv(p);
        }
    }
}

static const char *const no_table_stmts[] = {
    "SET", "BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "LOCK", "UNLOCK", "CALL", "DO",
    "FLUSH", "KILL", "GRANT", "REVOKE", "ANALYZE", "OPTIMIZE", "CHECK", "REPAIR", "HANDLER", "LOAD",
    "PREPARE", "EXECUTE", "DEALLOCATE", "RENAME", "XA", "CHECKSUM", "RESET", "PURGE", "INSTALL",
    "UNINSTALL", "BINLOG", "CACHE", "SIGNAL", "RESIGNAL", "GET", "HELP", "SHUTDOWN", "BACKUP", "END",
    NULL,
};

static void statement(struct parser *p)
{
    static const char *const ins_mods[] = {"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO", NULL};
    static const char *const del_mods[] = {"LOW_PRIORITY", "QUICK", "IGNORE", NULL};
    static const char *const create_mods[] = {"OR", "REPLACE", "TEMPORARY", "ONLINE", "OFFLINE", "UNIQUE",
                                              "FULLTEXT", "SPATIAL", "IF", "NOT", "EXISTS", "IGNORE", NULL};
    struct tok kw = p->t;

    if (is_punct(&kw, '(')) {
        /* (SELECT ...) UNION (SELECT ...) */
        paren_group(p, SQL_OP_SELECT);
        scan_until_end(p, SQL_OP_SELECT);
        return;
    }
    if (kw.kind != T_WORD) {
        p->err = true;
        return;
    }
    adv(p);
    if (is(&kw, "SELECT") || is(&kw, "WITH") || is(&kw, "VALUES")) {
        scan_until_end(p, SQL_OP_SELECT);
    } else if (is(&kw, "TABLE")) {
        table_name(p, SQL_OP_SELECT);
        scan_until_end(p, SQL_OP_SELECT);
    } else if (is(&kw, "INSERT") || is(&kw, "REPLACE")) {
        skip_words(p, ins_mods);
        if (!table_name(p, SQL_OP_INSERT))
            p->err = true;
        scan_until_end(p, SQL_OP_SELECT);
    } else if (is(&kw, "UPDATE")) {
        skip_words(p, del_mods);
        table_list(p, SQL_OP_UPDATE, SQL_OP_UPDATE);
        if (!p->err && !is(&p->t, "SET"))
            p->err = true;
        scan_until_end(p, SQL_OP_SELECT);
    } else if (is(&kw, "DELETE")) {
        skip_words(p, del_mods);
        if (is(&p->t, "FROM")) {
            adv(p);
            table_list(p, SQL_OP_DELETE, SQL_OP_SELECT);
            if (is(&p->t, "USING")) {
                adv(p);
                table_list(p, SQL_OP_SELECT, SQL_OP_SELECT);
            }
        } else {
            /* DELETE t1, t2 FROM t1 JOIN t2 ... */
            table_list(p, SQL_OP_DELETE, SQL_OP_DELETE);
            if (!is(&p->t, "FROM"))
                p->err = true;
        }
        scan_until_end(p, SQL_OP_SELECT);
    } else if (is(&kw, "TRUNCATE")) {
        if (is(&p->t, "TABLE"))
            adv(p);
        if (!table_name(p, SQL_OP_DELETE))
            p->err = true;
        scan_until_end(p, SQL_OP_SELECT);
    } else if (is(&kw, "CREATE") || is(&kw, "DROP") || is(&kw, "ALTER")) {
        unsigned op = is(&kw, "CREATE") ? SQL_OP_CREATE : is(&kw, "DROP") ? SQL_OP_DROP : SQL_OP_ALTER;
        /* CREATE [OR REPLACE] [ALGORITHM=..] [DEFINER=..] [SQL SECURITY ..] VIEW: skip to the object word */
        for (int i = 0; i < 16 && !p->err && p->t.kind != T_END; i++) {
            if (is(&p->t, "TABLE") || is(&p->t, "TABLES") || is(&p->t, "VIEW") || is(&p->t, "INDEX") ||
                is(&p->t, "DATABASE") || is(&p->t, "SCHEMA") || is(&p->t, "PROCEDURE") ||
                is(&p->t, "FUNCTION") || is(&p->t, "TRIGGER") || is(&p->t, "USER") || is(&p->t, "EVENT") ||
                is(&p->t, "SEQUENCE") || is(&p->t, "ROLE") || is(&p->t, "SERVER"))
                break;
            adv(p);
        }
        if (is(&p->t, "TABLE") || is(&p->t, "TABLES") || is(&p->t, "VIEW") || is(&p->t, "SEQUENCE")) {
            adv(p);
            skip_words(p, create_mods);
            if (!table_name(p, op))
                p->err = true;
            while (op == SQL_OP_DROP && is_punct(&p->t, ',')) {
                adv(p);
                table_name(p, op);
            }
            if (is(&p->t, "LIKE")) {
                adv(p);
                table_name(p, SQL_OP_SELECT);
            }
        } else if (is(&p->t, "INDEX")) {
            /* CREATE INDEX i ON t (...) / DROP INDEX i ON t */
            while (!p->err && p->t.kind != T_END && !is(&p->t, "ON") && !is_punct(&p->t, ';'))
                adv(p);
            if (is(&p->t, "ON")) {
                adv(p);
                table_name(p, op);
            }
        }
        scan_until_end(p, SQL_OP_SELECT);
    } else if (is(&kw, "SHOW")) {
        if (is(&p->t, "FULL") || is(&p->t, "EXTENDED"))
            adv(p);
        if (is(&p->t, "COLUMNS") || is(&p->t, "FIELDS") || is(&p->t, "INDEX") || is(&p->t, "INDEXES") ||
            is(&p->t, "KEYS")) {
            adv(p);
            if (is(&p->t, "FROM") || is(&p->t, "IN")) {
                adv(p);
                table_name(p, SQL_OP_SHOW);
            }
        } else if (is(&p->t, "CREATE")) {
            adv(p);
            if (is(&p->t, "TABLE") || is(&p->t, "VIEW")) {
                adv(p);
                table_name(p, SQL_OP_SHOW);
            }
        }
        while (!p->err && p->t.kind != T_END && !is_punct(&p->t, ';')) {
            if (is_punct(&p->t, '('))
                paren_group(p, SQL_OP_SELECT);
            else
                adv(p);
        }
    } else if (is(&kw, "DESCRIBE") || is(&kw, "DESC") || is(&kw, "EXPLAIN")) {
        if (is(&p->t, "SELECT") || is(&p->t, "INSERT") || is(&p->t, "UPDATE") || is(&p->t, "DELETE") ||
            is(&p->t, "REPLACE") || is(&p->t, "EXTENDED") || is(&p->t, "FORMAT") || is(&p->t, "WITH") ||
            is(&p->t, "ANALYZE")) {
            while (is(&p->t, "EXTENDED") || is(&p->t, "ANALYZE"))
                adv(p);
            statement(p);
            return;
        }
        table_name(p, SQL_OP_SHOW);
        scan_until_end(p, SQL_OP_SELECT);
    } else if (is(&kw, "USE")) {
        if (!ident(&p->t)) {
            p->err = true;
            return;
        }
        copy_name(p->r->use_db, &p->t);
        adv(p);
    } else if (keyword_in(&kw, no_table_stmts)) {
        while (!p->err && p->t.kind != T_END && !is_punct(&p->t, ';')) {
            if (is_punct(&p->t, '('))
                paren_group(p, SQL_OP_SELECT);
            else
                adv(p);
        }
    } else {
        p->err = true;
    }
}

int sql_parse(const char *q, size_t len, struct sql_result *r)
{
    struct parser p = {.lx = {.s = q, .end = q + len}, .r = r};

    memset(r, 0, sizeof(*r));
    if (!q)
        return -1;
    adv(&p);
    while (!p.err && p.t.kind != T_END) {
        if (is_punct(&p.t, ';')) {
            adv(&p);
            continue;
        }
        statement(&p);
        if (p.err)
            break;
        r->nstatements++;
        if (p.t.kind != T_END && !is_punct(&p.t, ';'))
            p.err = true; /* a stray ')' */
    }
    return p.err || r->nstatements == 0 ? -1 : 0;
}

char *sql_ops_str(unsigned ops, char *out, size_t size)
{
    static const char *const names[] = {"select", "insert", "update", "delete", "create", "drop", "alter",
                                        "show"};
    size_t n = 0;

    if (size)
        out[0] = 0;
    for (unsigned i = 0; i < 8; i++) {
        if (!(ops & (1u << i)))
            continue;
        int k = snprintf(out + n, size > n ? size - n : 0, "%s%s", n ? "," : "", names[i]);
        if (k < 0 || (size_t)k >= size - n)
            break;
        n += (size_t)k;
    }
    return out;
}
