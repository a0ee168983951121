/* account.c: which Unix account a job may run as on this node.
 *
 * Rules (docs/agent.md): an agent running as root switches to the job's
 * account before exec and refuses any account whose uid is 0 unless the
 * mapping names "root" literally; an agent running as anyone else can only
 * run jobs of its own account. */
#include "agent_internal.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int agent_account_resolve(const char *unix_user, struct agent_account *a, char *err,
                          size_t errlen)
{
    memset(a, 0, sizeof *a);
    if (!unix_user || !unix_user[0]) {
        snprintf(err, errlen, "the job has no unix_user");
        return -1;
    }
    struct passwd pw, *res = NULL;
    char buf[16384];
    int rc = getpwnam_r(unix_user, &pw, buf, sizeof buf, &res);
    if (!res) {
        snprintf(err, errlen, "unix_user \"%s\": no such Unix account on this node%s%s",
                 unix_user, rc ? ": " : "", rc ? strerror(rc) : "");
        return -1;
    }
    if (strlen(pw.pw_name) >= sizeof a->name) {
        snprintf(err, errlen, "unix_user \"%s\": name too long", unix_user);
        return -1;
    }
    uid_t me = geteuid();
    if (me == 0) {
        if (pw.pw_uid == 0 && strcmp(unix_user, "root") != 0) {
            snprintf(err, errlen, "unix_user \"%s\" has uid 0; jobs run as root only when the "
                     "user's mapping says \"root\" literally", unix_user);
            return -1;
        }
        a->switch_user = pw.pw_uid != 0;
    } else if (pw.pw_uid != me) {
        struct passwd *mine = getpwuid(me);
        snprintf(err, errlen, "unix_user \"%s\": this agent runs as uid %d (%s), not as root, "
                 "so it can only run jobs of that account", unix_user, (int)me,
                 mine ? mine->pw_name : "?");
        return -1;
    }
    a->uid = pw.pw_uid;
    a->gid = pw.pw_gid;
    snprintf(a->name, sizeof a->name, "%s", pw.pw_name);
    snprintf(a->home, sizeof a->home, "%s", pw.pw_dir ? pw.pw_dir : "/");
    snprintf(a->shell, sizeof a->shell, "%s",
             pw.pw_shell && pw.pw_shell[0] ? pw.pw_shell : "/bin/sh");
    if (a->switch_user) {
        int n = (int)(sizeof a->groups / sizeof a->groups[0]);
        if (getgrouplist(pw.pw_name, pw.pw_gid, a->groups, &n) < 0) {
            snprintf(err, errlen, "unix_user \"%s\": member of more than %zu groups", unix_user,
                     sizeof a->groups / sizeof a->groups[0]);
            return -1;
        }
        a->ngroups = n;
    }
    return 0;
}
