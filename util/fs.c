#include "fs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int fs_mkdirs(const char *dir, struct err *err)
{
    if (!*dir)
        return err_set(err, "an empty directory name");
    char *path = strdup(dir);
    if (!path)
        return err_set(err, "out of memory");
    for (char *s = path + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            err_set(err, "cannot create directory %s: %s", path, strerror(errno));
            free(path);
            return -1;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    free(path);
    return 0;
}
