/* test_serve_text.c: commons-serve's completion text (serve_text.c), Check.
 * Stop strings split over tokens, held prefixes released when they do not complete,
 * UTF-8 sequences split over tokens, invalid bytes replaced, and the visible text is
 * always valid UTF-8 that only grows. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "serve.h"

/* Feed pieces; return the visible text after each in steps[] (as lengths). */
static bool feed(serve_text *t, const char *const *pieces, int n, const char *const *stops,
                 int n_stops, size_t *vis_after)
{
    bool stopped = false;
    for (int i = 0; i < n && !stopped; i++) {
        size_t before = t->vis_len;
        ck_assert_int_eq(serve_text_append(t, pieces[i], strlen(pieces[i]), stops, n_stops,
                                           &stopped), 0);
        ck_assert_uint_ge(t->vis_len, before);
        if (vis_after)
            vis_after[i] = t->vis_len;
    }
    return stopped;
}

START_TEST(stop_split_over_tokens)
{
    serve_text t = { 0 };
    const char *stops[] = { "END" };
    const char *pieces[] = { "Hello E", "N", "D and more" };
    size_t vis[3];
    ck_assert(feed(&t, pieces, 3, stops, 1, vis));
    ck_assert_uint_eq(vis[0], 6);   /* "Hello " shown, "E" held */
    ck_assert_uint_eq(vis[1], 6);   /* "EN" held */
    ck_assert_str_eq(t.vis, "Hello ");
    ck_assert_uint_eq(t.raw_len, 6);
    serve_text_free(&t);
}
END_TEST

START_TEST(held_prefix_released)
{
    serve_text t = { 0 };
    const char *stops[] = { "END", "" };
    const char *pieces[] = { "an E", "x", "EN" };
    ck_assert(!feed(&t, pieces, 3, stops, 2, NULL));
    ck_assert_str_eq(t.vis, "an Ex");   /* "EN" could still become END */
    ck_assert_int_eq(serve_text_finish(&t), 0);
    ck_assert_str_eq(t.vis, "an ExEN");  /* the sequence ended: the held tail is shown */
    serve_text_free(&t);
}
END_TEST

START_TEST(utf8_split_and_invalid)
{
    serve_text t = { 0 };
    /* "é" = C3 A9 split over two tokens; "€" = E2 82 AC split 1+2 */
    const char *pieces[] = { "caf\xC3", "\xA9 ", "\xE2", "\x82\xAC!" };
    size_t vis[4];
    ck_assert(!feed(&t, pieces, 4, NULL, 0, vis));
    ck_assert_uint_eq(vis[0], 3);       /* the lone lead byte waits */
    ck_assert_uint_eq(vis[1], 6);
    ck_assert_uint_eq(vis[2], 6);
    ck_assert_str_eq(t.vis, "caf\xC3\xA9 \xE2\x82\xAC!");
    /* invalid bytes: a stray continuation, an overlong lead, a surrogate */
    const char *bad[] = { "\x80", "\xC0\xAF", "\xED\xA0\x80", "ok" };
    ck_assert(!feed(&t, bad, 4, NULL, 0, NULL));
    const char *rep = "\xEF\xBF\xBD";
    char want[128];
    /* 0x80 -> 1; C0 (never valid) and then AF (stray) -> 2; ED A0 (a surrogate) -> 1 for
     * ED, then A0 and 80 are stray continuations -> 2 more: 6 replacements */
    snprintf(want, sizeof want, "caf\xC3\xA9 \xE2\x82\xAC!%s%s%s%s%s%sok", rep, rep, rep, rep,
             rep, rep);
    ck_assert_str_eq(t.vis, want);
    /* a truncated sequence at the very end becomes one replacement at finish */
    const char *tail[] = { "\xF0\x9F" };
    feed(&t, tail, 1, NULL, 0, NULL);
    size_t before = t.vis_len;
    ck_assert_int_eq(serve_text_finish(&t), 0);
    ck_assert_uint_eq(t.vis_len, before + 6);   /* F0 9F: both bytes replaced */
    serve_text_free(&t);
}
END_TEST

START_TEST(stop_inside_one_token_and_multibyte)
{
    serve_text t = { 0 };
    const char *stops[] = { "\xC3\xA9t\xC3\xA9" };   /* "été" */
    const char *pieces[] = { "un \xC3\xA9t\xC3\xA9 chaud" };
    ck_assert(feed(&t, pieces, 1, stops, 1, NULL));
    ck_assert_str_eq(t.vis, "un ");
    serve_text_free(&t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("serve_text");
    TCase *tc = tcase_create("text");
    tcase_add_test(tc, stop_split_over_tokens);
    tcase_add_test(tc, held_prefix_released);
    tcase_add_test(tc, utf8_split_and_invalid);
    tcase_add_test(tc, stop_inside_one_token_and_multibyte);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
