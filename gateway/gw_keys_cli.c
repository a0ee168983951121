/* gw_keys_cli.c: `commons-gateway keys create|list|revoke` (see gw_keys_cli.h). */
#include "gw_keys_cli.h"

#include "gw_keys.h"
#include "quota_policy.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int usage(FILE *f)
{
    fprintf(f,
            "usage: commons-gateway keys create --state DIR [--name NAME] [--tier TIER] [--policy FILE] [--json]\n"
            "       commons-gateway keys list   --state DIR [--json]\n"
            "       commons-gateway keys revoke --state DIR ID|PREFIX|NAME\n"
            "The key is printed once by create; only its SHA-256 is stored (STATE/gateway.db).\n"
            "--policy checks that TIER exists in the policy file.\n");
    return 2;
}

static json_t *key_json(const gw_key_info *k)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:I, s:b, s:I, s:I, s:I, s:I}", "id", (json_int_t)k->id,
                     "name", k->name, "tier", k->tier, "prefix", k->prefix, "created",
                     (json_int_t)k->created, "revoked", k->revoked != 0, "tokens_today",
                     (json_int_t)k->tokens_today, "requests_today", (json_int_t)k->requests_today,
                     "tokens_total", (json_int_t)k->tokens_total, "requests_total",
                     (json_int_t)k->requests_total);
}

static int check_tier(const char *policy, const char *tier)
{
    quota_diags diags;
    quota_diags_init(&diags);
    quota_policy *p = NULL;
    int rc = quota_policy_load_file(policy, &p, &diags);
    if (rc != QUOTA_OK) {
        quota_diags_print(&diags, stderr);
        quota_diags_free(&diags);
        return -1;
    }
    quota_diags_free(&diags);
    int ok = quota_tier_find(p, tier) >= 0;
    if (!ok) {
        fprintf(stderr, "keys create: tier '%s' is not in %s; tiers:", tier, policy);
        for (int i = 0; i < p->ntiers; i++) fprintf(stderr, " %s", p->tiers[i].name);
        fprintf(stderr, "\n");
    }
    quota_policy_free(p);
    return ok ? 0 : -1;
}

int gw_keys_cli(int argc, char **argv)
{
    if (argc < 2) return usage(stderr);
    const char *cmd = argv[1];
    const char *state = NULL, *name = "citizen", *tier = NULL, *policy = NULL;
    int json = 0;
    static struct option opts[] = {{"state", required_argument, 0, 's'},
                                   {"name", required_argument, 0, 'n'},
                                   {"tier", required_argument, 0, 't'},
                                   {"policy", required_argument, 0, 'p'},
                                   {"json", no_argument, 0, 'j'},
                                   {"help", no_argument, 0, 'h'},
                                   {0, 0, 0, 0}};
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': state = optarg; break;
        case 'n': name = optarg; break;
        case 't': tier = optarg; break;
        case 'p': policy = optarg; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: return usage(stderr);
        }
    }
    if (!state) {
        fprintf(stderr, "keys %s: --state DIR is required (the gateway's state directory)\n", cmd);
        return 2;
    }
    int is_create = !strcmp(cmd, "create"), is_list = !strcmp(cmd, "list"),
        is_revoke = !strcmp(cmd, "revoke");
    if (!is_create && !is_list && !is_revoke) return usage(stderr);
    if (is_revoke != (optind == argc - 1)) return usage(stderr);
    if (tier && policy && check_tier(policy, tier) != 0) return 1;

    char err[512];
    gw_keystore *ks;
    if (gw_keys_open(state, &ks, err, sizeof err) != GW_KEYS_OK) {
        fprintf(stderr, "keys %s: %s\n", cmd, err);
        return 1;
    }
    int rc = 0;
    if (is_create) {
        char key[GW_KEY_LEN + 1];
        gw_key_info info;
        if (gw_keys_create(ks, name, tier, key, &info, err, sizeof err) != GW_KEYS_OK) {
            fprintf(stderr, "keys create: %s\n", err);
            rc = 1;
        } else if (json) {
            json_t *j = key_json(&info);
            json_object_set_new(j, "key", json_string(key));
            json_dumpf(j, stdout, JSON_INDENT(2));
            printf("\n");
            json_decref(j);
        } else {
            printf("%s\n", key);
            fprintf(stderr, "created key %lld (%s, tier %s); it is shown only now\n",
                    (long long)info.id, info.name, info.tier[0] ? info.tier : "(default)");
        }
    } else if (is_list) {
        gw_key_info *keys;
        size_t n;
        if (gw_keys_list(ks, &keys, &n, err, sizeof err) != GW_KEYS_OK) {
            fprintf(stderr, "keys list: %s\n", err);
            rc = 1;
        } else if (json) {
            json_t *a = json_array();
            for (size_t i = 0; i < n; i++) json_array_append_new(a, key_json(&keys[i]));
            json_dumpf(a, stdout, JSON_INDENT(2));
            printf("\n");
            json_decref(a);
        } else {
            printf("%-5s %-13s %-20s %-12s %-8s %12s %9s\n", "ID", "PREFIX", "NAME", "TIER",
                   "STATE", "TOKENS_TODAY", "REQUESTS");
            for (size_t i = 0; i < n; i++)
                printf("%-5lld %-13s %-20s %-12s %-8s %12lld %9lld\n", (long long)keys[i].id,
                       keys[i].prefix, keys[i].name, keys[i].tier[0] ? keys[i].tier : "(default)",
                       keys[i].revoked ? "revoked" : "active", (long long)keys[i].tokens_today,
                       (long long)keys[i].requests_total);
        }
        free(keys);
    } else {
        int count = 0;
        if (gw_keys_revoke(ks, argv[optind], &count, err, sizeof err) != GW_KEYS_OK) {
            fprintf(stderr, "keys revoke: %s\n", err);
            rc = 1;
        } else {
            printf("revoked %d key%s\n", count, count == 1 ? "" : "s");
        }
    }
    gw_keys_close(ks);
    return rc;
}
