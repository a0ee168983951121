/* jobfile.c: flags, #COMMONS directives and YAML job files -> job spec. */
#include "jobfile.h"

#include "cm_util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

enum flag_kind { F_STR, F_INT, F_SIZE, F_TIME, F_BOOL, F_ENV };

struct flag {
    char short_name;
    const char *long_name;
    const char *field; /* spec field */
    enum flag_kind kind;
    const char *help;
};

static const struct flag flags[] = {
    {'J', "job-name", "name", F_STR, "job name"},
    {'A', "account", "account", F_STR, "account to charge"},
    {'N', "nodes", "nodes", F_INT, "number of nodes (1)"},
    {'n', "ntasks", "tasks", F_INT, "number of tasks (1)"},
    {'c', "cpus-per-task", "cpus_per_task", F_INT, "CPUs per task (1)"},
    {'G', "gpus", "gpus", F_INT, "GPUs per node (0)"},
    {0, "mem", "mem_mb", F_SIZE, "memory per node: 512M, 4G (none)"},
    {'t', "time", "time_limit_s", F_TIME, "time limit: minutes, H:M:S, D-H:M:S, 30m (1:00:00)"},
    {'q', "qos", "qos", F_STR, "quality of service (normal)"},
    {'o', "output", "stdout", F_STR, "stdout path; %j job id, %A array id, %a index"},
    {'e', "error", "stderr", F_STR, "stderr path (default: with stdout)"},
    {'D', "chdir", "workdir", F_STR, "working directory (current directory)"},
    {'d', "dependency", "dependency", F_STR, "afterok:ID[:ID], afterany:ID"},
    {'a', "array", "array", F_STR, "array indices: 1-100, 1-100%10, 1,3,5, 0-15:4"},
    {'H', "hold", "hold", F_BOOL, "submit held (release with commons release)"},
    {0, "requeue", "requeue", F_BOOL, "requeue instead of NODE_FAIL if the node dies"},
    {0, "ntasks-per-node", "tasks_per_node", F_INT, "tasks on each node (tasks = nodes x this)"},
    {0, "mpi", "mpi", F_BOOL, "run the command under Open MPI's mpirun across the job's nodes"},
    {0, "export", "env", F_ENV, "ALL (default), NONE, or VAR[=value],..."},
};
#define NFLAGS (sizeof flags / sizeof *flags)

const char jobfile_flags_help[] =
    "  -J, --job-name NAME      job name\n"
    "  -A, --account NAME       account to charge (default: your default account)\n"
    "  -N, --nodes N            number of nodes (1)\n"
    "  -n, --ntasks N           number of tasks (1)\n"
    "  -c, --cpus-per-task N    CPUs per task (1)\n"
    "  -G, --gpus N             GPUs per node (0)\n"
    "      --mem SIZE           memory per node: 512M, 4G (no limit)\n"
    "  -t, --time LIMIT         minutes, M:S, H:M:S, D-H:M:S, or 90s/30m/2h/7d (1:00:00)\n"
    "  -q, --qos NAME           quality of service (normal)\n"
    "  -o, --output PATH        stdout file; %j job id, %A array id, %a index (commons-%j.out)\n"
    "  -e, --error PATH         stderr file (default: together with stdout)\n"
    "  -D, --chdir DIR          working directory (the current directory)\n"
    "  -d, --dependency DEPS    afterok:ID[:ID...], afterany:ID[:ID...], comma-separated\n"
    "  -a, --array SPEC         1-100, 1-100%10 (at most 10 at once), 1,3,5, 0-15:4\n"
    "  -H, --hold               submit held; start it with: commons release ID\n"
    "      --requeue            requeue instead of ending NODE_FAIL if its node dies\n"
    "      --ntasks-per-node N  tasks on each node (tasks = nodes x N)\n"
    "      --mpi                run under Open MPI's mpirun, one rank per task, across the nodes\n"
    "      --export WHAT        environment: ALL (default), NONE, or VAR[=value],...\n";

static const struct flag *find_flag(const char *name)
{
    for (size_t i = 0; i < NFLAGS; i++) {
        if (name[0] && !name[1] && flags[i].short_name == name[0]) return &flags[i];
        if (strcmp(name, flags[i].long_name) == 0) return &flags[i];
    }
    /* YAML files use the spec's own field names too (cpus_per_task, time_limit_s...). */
    for (size_t i = 0; i < NFLAGS; i++)
        if (strcmp(name, flags[i].field) == 0) return &flags[i];
    return NULL;
}

int jobfile_flag_takes_value(const char *flag)
{
    const struct flag *f = find_flag(flag);
    return f ? f->kind != F_BOOL : -1;
}

extern char **environ;

static int apply_env(json_t *spec, const char *value, const char *where, char *err, size_t errlen)
{
    json_t *env = json_object();
    if (strcmp(value, "NONE") == 0) {
        json_object_set_new(spec, "env", env);
        return 0;
    }
    if (strcmp(value, "ALL") == 0) {
        for (char **e = environ; *e; e++) {
            const char *eq = strchr(*e, '=');
            if (!eq || eq == *e) continue;
            char name[256];
            size_t n = (size_t)(eq - *e);
            if (n >= sizeof name) continue;
            memcpy(name, *e, n);
            name[n] = '\0';
            /* Never ship credentials or odd names with the job. */
            if (strcmp(name, "COMMONS_TOKEN") == 0 || strncmp(name, "BASH_FUNC_", 10) == 0) continue;
            int ok = isalpha((unsigned char)name[0]) || name[0] == '_';
            for (size_t i = 0; i < n; i++) ok &= isalnum((unsigned char)name[i]) || name[i] == '_';
            if (ok) json_object_set_new(env, name, json_string(eq + 1));
        }
        json_object_set_new(spec, "env", env);
        return 0;
    }
    char *copy = strdup(value), *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (eq) *eq = '\0';
        const char *v = eq ? eq + 1 : getenv(item);
        int ok = isalpha((unsigned char)item[0]) || item[0] == '_';
        for (char *p = item; *p; p++) ok &= isalnum((unsigned char)*p) || *p == '_';
        if (!ok) {
            snprintf(err, errlen, "%s: --export: '%s' is not a variable name", where, item);
            free(copy);
            json_decref(env);
            return -1;
        }
        if (v) json_object_set_new(env, item, json_string(v));
    }
    free(copy);
    json_object_set_new(spec, "env", env);
    return 0;
}

static int apply(json_t *spec, const struct flag *f, const char *value, const char *where, char *err, size_t errlen)
{
    char *end;
    switch (f->kind) {
    case F_STR:
        if (!*value) {
            snprintf(err, errlen, "%s: --%s: expected a value", where, f->long_name);
            return -1;
        }
        json_object_set_new(spec, f->field, json_string(value));
        return 0;
    case F_INT: {
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || *end || end == value || v < 0 || v > 1000000000) {
            snprintf(err, errlen, "%s: --%s: expected a non-negative integer, got '%s'", where, f->long_name, value);
            return -1;
        }
        json_object_set_new(spec, f->field, json_integer(v));
        return 0;
    }
    case F_SIZE: {
        int64_t mb = cm_parse_size_mb(value);
        if (mb < 0) {
            snprintf(err, errlen, "%s: --%s: expected a size such as 512M or 4G, got '%s'", where, f->long_name, value);
            return -1;
        }
        json_object_set_new(spec, f->field, json_integer(mb));
        return 0;
    }
    case F_TIME: {
        int64_t s = cm_parse_duration(value);
        if (s <= 0) {
            snprintf(err, errlen, "%s: --%s: expected minutes, H:M:S, D-H:M:S or 30m/2h, got '%s'", where,
                     f->long_name, value);
            return -1;
        }
        json_object_set_new(spec, f->field, json_integer(s));
        return 0;
    }
    case F_BOOL:
        if (value && strcmp(value, "false") == 0) json_object_set_new(spec, f->field, json_false());
        else if (!value || strcmp(value, "true") == 0) json_object_set_new(spec, f->field, json_true());
        else {
            snprintf(err, errlen, "%s: --%s: expected true or false, got '%s'", where, f->long_name, value);
            return -1;
        }
        return 0;
    case F_ENV:
        return apply_env(spec, value, where, err, errlen);
    }
    return -1;
}

int jobfile_apply_flag(json_t *spec, const char *flag, const char *value, const char *where, char *err,
                       size_t errlen)
{
    const struct flag *f = find_flag(flag);
    if (!f) {
        snprintf(err, errlen, "%s: unknown option '%s%s'", where, flag[1] ? "--" : "-", flag);
        return -1;
    }
    return apply(spec, f, value, where, err, errlen);
}

/* Splits a directive's text into words; double quotes group words. */
static int split_words(char *s, char **words, int max)
{
    int n = 0;
    while (*s && n < max) {
        while (isspace((unsigned char)*s)) s++;
        if (!*s) break;
        char *out = s;
        words[n++] = s;
        int quoted = 0;
        while (*s && (quoted || !isspace((unsigned char)*s))) {
            if (*s == '"') quoted = !quoted;
            else *out++ = *s;
            s++;
        }
        if (*s) s++;
        *out = '\0';
    }
    return n;
}

int jobfile_apply_directives(json_t *spec, const char *script, const char *path, char *err, size_t errlen)
{
    const char *p = script;
    for (int line = 1; *p; line++) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char buf[4096];
        char where[4200];
        snprintf(where, sizeof where, "%s:%d", path, line);
        if (len >= sizeof buf) {
            snprintf(err, errlen, "%s: line longer than %zu bytes", where, sizeof buf - 1);
            return -1;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        char *t = buf;
        while (isspace((unsigned char)*t)) t++;
        /* Directives end at the first line that is neither blank nor a comment, as with #SBATCH. */
        if (*t && *t != '#') break;
        if (strncmp(t, "#COMMONS", 8) == 0 && (t[8] == '\0' || isspace((unsigned char)t[8]))) {
            char *words[64];
            int n = split_words(t + 8, words, 64);
            for (int i = 0; i < n; i++) {
                char *w = words[i], *value = NULL;
                if (w[0] != '-' || !w[1]) {
                    snprintf(err, errlen, "%s: #COMMONS: expected an option such as --time=1:00:00, got '%s'", where, w);
                    return -1;
                }
                char *name = w + (w[1] == '-' ? 2 : 1);
                char *eq = strchr(name, '=');
                if (eq) {
                    *eq = '\0';
                    value = eq + 1;
                }
                int takes = jobfile_flag_takes_value(name);
                if (takes < 0) {
                    snprintf(err, errlen, "%s: #COMMONS: unknown option '%s'", where, w);
                    return -1;
                }
                if (takes && !value) {
                    if (i + 1 >= n) {
                        snprintf(err, errlen, "%s: #COMMONS: option '%s' needs a value", where, w);
                        return -1;
                    }
                    value = words[++i];
                }
                if (jobfile_apply_flag(spec, name, value, where, err, errlen) != 0) return -1;
            }
        }
        if (!nl) break;
        p = nl + 1;
    }
    return 0;
}

/* ---- YAML ---------------------------------------------------------------- */

static int yaml_fail(char *err, size_t errlen, const char *path, yaml_node_t *n, const char *fmt, const char *a)
{
    char msg[1024];
    snprintf(msg, sizeof msg, fmt, a);
    snprintf(err, errlen, "%s:%zu:%zu: %s", path, n->start_mark.line + 1, n->start_mark.column + 1, msg);
    return -1;
}

static const char *scalar(yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

int jobfile_load_yaml(json_t *spec, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int rc = -1;
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%s:%zu:%zu: YAML syntax error: %s", path, parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1, parser.problem ? parser.problem : "malformed");
        yaml_parser_delete(&parser);
        fclose(f);
        return -1;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        if (root) yaml_fail(err, errlen, path, root, "expected a mapping of job fields (name: ..., command: ...)%s", "");
        else snprintf(err, errlen, "%s: empty job file", path);
        goto out;
    }
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(&doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(&doc, pr->value);
        const char *key = scalar(k);
        if (!key) {
            yaml_fail(err, errlen, path, k, "expected a field name%s", "");
            goto out;
        }
        char where[4200];
        snprintf(where, sizeof where, "%s:%zu:%zu: field '%s'", path, v->start_mark.line + 1,
                 v->start_mark.column + 1, key);
        if (strcmp(key, "command") == 0) {
            json_t *cmd = json_array();
            if (v->type == YAML_SCALAR_NODE) {
                json_array_append_new(cmd, json_string("/bin/sh"));
                json_array_append_new(cmd, json_string("-c"));
                json_array_append_new(cmd, json_string(scalar(v)));
            } else if (v->type == YAML_SEQUENCE_NODE) {
                for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                    yaml_node_t *e = yaml_document_get_node(&doc, *it);
                    if (!scalar(e)) {
                        json_decref(cmd);
                        yaml_fail(err, errlen, path, e, "field 'command': expected a list of strings%s", "");
                        goto out;
                    }
                    json_array_append_new(cmd, json_string(scalar(e)));
                }
            } else {
                json_decref(cmd);
                yaml_fail(err, errlen, path, v, "field 'command': expected a string or a list of strings%s", "");
                goto out;
            }
            json_object_set_new(spec, "command", cmd);
        } else if (strcmp(key, "script") == 0) {
            if (!scalar(v)) {
                yaml_fail(err, errlen, path, v, "field 'script': expected text (use | for a block)%s", "");
                goto out;
            }
            json_object_set_new(spec, "script", json_string(scalar(v)));
        } else if (strcmp(key, "env") == 0) {
            if (v->type != YAML_MAPPING_NODE) {
                yaml_fail(err, errlen, path, v, "field 'env': expected a mapping of NAME: value%s", "");
                goto out;
            }
            json_t *env = json_object();
            for (yaml_node_pair_t *e = v->data.mapping.pairs.start; e < v->data.mapping.pairs.top; e++) {
                yaml_node_t *ek = yaml_document_get_node(&doc, e->key), *ev = yaml_document_get_node(&doc, e->value);
                if (!scalar(ek) || !scalar(ev)) {
                    json_decref(env);
                    yaml_fail(err, errlen, path, ek, "field 'env': names and values must be scalars%s", "");
                    goto out;
                }
                json_object_set_new(env, scalar(ek), json_string(scalar(ev)));
            }
            json_object_set_new(spec, "env", env);
        } else {
            const struct flag *fl = find_flag(key);
            if (!fl || fl->kind == F_ENV) {
                yaml_fail(err, errlen, path, k,
                          "unknown field '%s' (expected name, account, command, script, workdir, env, stdout, stderr, "
                          "nodes, tasks, tasks_per_node, cpus_per_task, gpus, mem, time, qos, dependency, array, hold, "
                          "requeue, mpi)",
                          key);
                goto out;
            }
            if (!scalar(v)) {
                yaml_fail(err, errlen, path, v, "field '%s': expected a single value", key);
                goto out;
            }
            if (apply(spec, fl, scalar(v), where, err, errlen) != 0) goto out;
        }
    }
    rc = 0;
out:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}
