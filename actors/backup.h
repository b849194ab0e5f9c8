/*
 * backup: the subcommands `parleyd backup`, `parleyd restore` and
 * `parleyd verify` (actors/backup.c; the server's side is actors/control.c).
 * Each takes its argv from the subcommand's name on and returns the exit
 * status.
 */
#ifndef PARLEY_BACKUP_H
#define PARLEY_BACKUP_H

int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_verify(int argc, char **argv);

#endif
