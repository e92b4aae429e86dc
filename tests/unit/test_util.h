/* Shared includes for cmocka unit tests (cmocka needs these before its own header). */
#ifndef RUNNEL_TEST_UTIL_H
#define RUNNEL_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#endif
