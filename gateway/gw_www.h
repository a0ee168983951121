/* gw_www.h: the status page's HTML, CSS and JavaScript (gateway/www/), built
 * into the gateway so it needs no files at run time and no external CDN. */
#ifndef GW_WWW_H
#define GW_WWW_H

#include <stddef.h>

typedef struct gw_asset {
    const char *path, *content_type;
    const unsigned char *data;
    size_t len;
} gw_asset;

extern const gw_asset gw_assets[]; /* ends with an entry whose path is NULL */

#endif
