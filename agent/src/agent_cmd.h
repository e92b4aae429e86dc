/* Entry points of `runnel agent` and `runnel dev` (agent_cmd.c). */
#ifndef RUNNEL_AGENT_CMD_H
#define RUNNEL_AGENT_CMD_H

int agent_cmd_agent(int argc, char **argv);
int agent_cmd_dev(int argc, char **argv);

#endif
