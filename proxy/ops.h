/* ops: Meridian's own endpoints on the client port, under /_meridian/:
 * health (the process is alive), ready (the backend answers and the store
 * can commit) and metrics (Prometheus text). Reads node state; changes none
 * of it. */
#ifndef MERIDIAN_OPS_H
#define MERIDIAN_OPS_H

struct downstream;

/* Answers the current request, whose path is under /_meridian/. */
void ops_handle(struct downstream *c);

#endif
