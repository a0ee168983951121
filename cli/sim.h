/* sim.h: `commons sim`, the trace-driven simulator front end (no server). */
#ifndef CLI_SIM_H
#define CLI_SIM_H

/* argv[0] is "sim". json: print the report as JSON on stdout. Returns an exit status. */
int sim_main(int argc, char **argv, int json);

#endif
