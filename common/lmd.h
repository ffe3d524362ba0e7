/**
 * lmd: version and the exit codes every tool shares (man lmd(7), EXIT STATUS).
 */
#ifndef LMD_H
#define LMD_H

#define LMD_VERSION "0.1.0"

enum lmd_exit {
	LMD_EXIT_OK = 0,      /* success */
	LMD_EXIT_FAIL = 1,    /* runtime failure */
	LMD_EXIT_USAGE = 2,   /* bad command line or request values */
	LMD_EXIT_FORMAT = 3,  /* an input file is missing, unreadable or invalid */
	LMD_EXIT_NOGPU = 4,   /* --device cuda asked for and no usable GPU */
};

#endif
