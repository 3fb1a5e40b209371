/* fs: small filesystem helpers shared by the parts that keep data on disk.
 * Owns nothing; never called on a hot path. */
#ifndef MERIDIAN_FS_H
#define MERIDIAN_FS_H

#include "err.h"

/* mkdir -p: creates `dir` and its missing parents (a fresh node's data_dir
 * usually does not exist yet). */
int fs_mkdirs(const char *dir, struct err *err) MUST_CHECK;

#endif
