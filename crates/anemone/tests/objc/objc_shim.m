/*
 * The "libobjc" that the objc_gnustep test hands to the backend's loader: GCC's libobjc
 * (a dependency of this library, so dlsym on it finds sel_registerName and objc_getClass
 * there) plus the three entry points Apple's runtime has and GCC's lacks:
 *
 * - objc_msgSend: msgsend_x86_64.S, over objc_msg_lookup;
 * - objc_autoreleasePoolPush/Pop: here, over NSAutoreleasePool, which is what they are
 *   on Apple's runtime too (a pool per push, popped in order; popping a pool drains the
 *   pools pushed after it).
 *
 * Nothing needs initialising by hand: GNUstep Base 1.28 on Linux reads the process's
 * arguments from /proc/self/cmdline when loaded (no GSInitializeProcess from a non-
 * Objective-C main), and registers a thread it has not seen (the test harness runs tests
 * on its own threads) as an NSThread the first time it needs one, such as for a pool.
 */
#import <Foundation/Foundation.h>

void *objc_autoreleasePoolPush(void);
void objc_autoreleasePoolPop(void *pool);

void *objc_autoreleasePoolPush(void)
{
    return [NSAutoreleasePool new];
}

void objc_autoreleasePoolPop(void *pool)
{
    [(NSAutoreleasePool *)pool release];
}
