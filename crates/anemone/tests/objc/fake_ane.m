/*
 * A fake of the private AppleNeuralEngine framework, of IOSurface and of CFRelease, in
 * Objective-C on GNUstep, for crates/anemone/tests/objc_gnustep.rs: the backend's real
 * Objective-C layer (src/apple/objc.rs) sends its messages to these classes through a real
 * Objective-C runtime.
 *
 * The classes answer exactly the selectors of REFERENCE.md section 1, and they are strict
 * where the framework's rules are known or where the backend relies on an assumption:
 *
 * - the descriptor wants NSData MIL text, a weights NSDictionary (never nil) of
 *   {"@model_path/...": {"offset": @0, "data": NSData}} and optionsPlist nil;
 * - compileWithQoS: reads NSTemporaryDirectory()/<hexStringIdentifier>/model.mil and
 *   every weights/ file from disk and fails with an NSError unless they hold exactly what
 *   the descriptor was given; a compiled program is remembered for the process
 *   (compiledModelExists then answers YES, as the framework's cache does);
 * - load needs a compiled program and an unloaded model, unload a loaded one, evaluate a
 *   loaded one and a request whose surfaces the CPU does not hold locked;
 * - a request wants arrays of _ANEIOSurfaceObject, NSNumber indices that are a
 *   permutation of 0..n-1, nil weightsBuffer and perfStats and an NSNumber procedure index
 *   below the number of functions in the program;
 * - IOSurfaceCreate wants the seed's properties (width = bytes per row = alloc size,
 *   height 1, 1 byte per element, pixel format 0) and fills new memory with 0xA5, so that a
 *   caller that relies on zeroed surfaces is caught; the base address is only to be used
 *   while locked, and unlock must match lock.
 *
 * Evaluation is a defined copy: the output at slot j (its outputIndices entry) receives the
 * bytes of the input at slot j mod (number of inputs), truncated or zero-padded to the
 * output's size. That makes the data path, the indices and the binding order checkable.
 *
 * Everything the fake notices that the framework would not like is a "complaint": counted
 * and the last one kept (fake_ane_complaints, fake_ane_last_complaint). Live objects and
 * surfaces are counted from init to dealloc, for leak checks.
 *
 * Written for GCC's Objective-C (no ARC, no literals, no @autoreleasepool).
 */
#import <Foundation/Foundation.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* ---- counters and switches (exported C functions the test finds with dlsym) ---- */

static long live_objects;
static long live_surfaces;
static long loaded_models;
static long compiles;
static long evaluates;
static long complaints;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_complaint[512];
static char *fail_message[3]; /* compile, load, evaluate */
/* hexStringIdentifier -> NSNumber: the number of functions of each compiled program. */
static NSMutableDictionary *compiled_programs;

enum { FAIL_COMPILE, FAIL_LOAD, FAIL_EVALUATE };

static void count(long *counter, long delta)
{
    __atomic_add_fetch(counter, delta, __ATOMIC_SEQ_CST);
}

static long read_counter(long *counter)
{
    return __atomic_load_n(counter, __ATOMIC_SEQ_CST);
}

static void complain(NSString *what)
{
    pthread_mutex_lock(&state_lock);
    complaints++;
    snprintf(last_complaint, sizeof last_complaint, "%s", [what UTF8String]);
    pthread_mutex_unlock(&state_lock);
    fprintf(stderr, "fake AppleNeuralEngine: %s\n", [what UTF8String]);
}

long fake_ane_live_objects(void) { return read_counter(&live_objects); }
long fake_ane_live_surfaces(void) { return read_counter(&live_surfaces); }
long fake_ane_loaded_models(void) { return read_counter(&loaded_models); }
long fake_ane_compiles(void) { return read_counter(&compiles); }
long fake_ane_evaluates(void) { return read_counter(&evaluates); }
long fake_ane_complaints(void) { return read_counter(&complaints); }

/* The last complaint, copied into `out` (NUL-terminated, at most `len` bytes). */
void fake_ane_last_complaint(char *out, size_t len)
{
    if (len == 0) {
        return;
    }
    pthread_mutex_lock(&state_lock);
    snprintf(out, len, "%s", last_complaint);
    pthread_mutex_unlock(&state_lock);
}

/*
 * Makes the next call of `which` ("compile", "load" or "evaluate") fail with an NSError
 * whose localized description is `message`. Returns 0, or -1 for an unknown call.
 */
int fake_ane_fail_next(const char *which, const char *message)
{
    int slot;
    if (strcmp(which, "compile") == 0) {
        slot = FAIL_COMPILE;
    } else if (strcmp(which, "load") == 0) {
        slot = FAIL_LOAD;
    } else if (strcmp(which, "evaluate") == 0) {
        slot = FAIL_EVALUATE;
    } else {
        return -1;
    }
    pthread_mutex_lock(&state_lock);
    free(fail_message[slot]);
    fail_message[slot] = strdup(message);
    pthread_mutex_unlock(&state_lock);
    return 0;
}

/* The armed failure of `slot`, taken (the caller frees it), or NULL. */
static char *take_failure(int slot)
{
    pthread_mutex_lock(&state_lock);
    char *message = fail_message[slot];
    fail_message[slot] = NULL;
    pthread_mutex_unlock(&state_lock);
    return message;
}

/* Fills an NSError out-parameter the way the framework does: autoreleased, may be NULL. */
static BOOL fail(NSError **error, NSString *domain, NSInteger code, NSString *text)
{
    if (error != NULL) {
        NSDictionary *info = [NSDictionary dictionaryWithObject:text
                                                         forKey:NSLocalizedDescriptionKey];
        *error = [NSError errorWithDomain:domain code:code userInfo:info];
    }
    return NO;
}

static BOOL fail_armed(int slot, NSError **error)
{
    char *message = take_failure(slot);
    if (message == NULL) {
        return YES;
    }
    NSString *text = [NSString stringWithUTF8String:message];
    free(message);
    NSString *domain = slot == FAIL_COMPILE ? @"com.apple.appleneuralengine.compiler"
                                            : @"com.apple.appleneuralengine";
    return fail(error, domain, slot + 1, text);
}

/* ---- IOSurface ---- */

/* An IOSurface: malloc'ed bytes, reference counted as an NSObject (CFRelease releases). */
@interface FakeIOSurface : NSObject
{
@public
    unsigned char *base;
    size_t size;
    int locks;
    uint32_t lockOptions;
}
@end

@implementation FakeIOSurface
- (id)initWithSize:(size_t)bytes
{
    self = [super init];
    if (self != nil) {
        base = malloc(bytes);
        if (base == NULL) {
            [self release];
            return nil;
        }
        memset(base, 0xA5, bytes);
        size = bytes;
        count(&live_surfaces, 1);
    }
    return self;
}

- (void)dealloc
{
    if (locks != 0) {
        complain(@"an IOSurface was released while locked");
    }
    free(base);
    count(&live_surfaces, -1);
    [super dealloc];
}
@end

NSString *const kIOSurfaceWidth = @"IOSurfaceWidth";
NSString *const kIOSurfaceHeight = @"IOSurfaceHeight";
NSString *const kIOSurfaceBytesPerElement = @"IOSurfaceBytesPerElement";
NSString *const kIOSurfaceBytesPerRow = @"IOSurfaceBytesPerRow";
NSString *const kIOSurfaceAllocSize = @"IOSurfaceAllocSize";
NSString *const kIOSurfacePixelFormat = @"IOSurfacePixelFormat";

enum { IO_RETURN_SUCCESS = 0, IO_RETURN_ERROR = (int)0xe00002bc, IO_RETURN_BAD = (int)0xe00002c2 };

static FakeIOSurface *as_surface(void *ref, const char *call)
{
    id object = (id)ref;
    if (object == nil || ![object isKindOfClass:[FakeIOSurface class]]) {
        complain([NSString stringWithFormat:@"%s was given something other than an IOSurface",
                                            call]);
        return nil;
    }
    return (FakeIOSurface *)object;
}

/* The property's value as an unsigned integer, or -1 when missing or not an NSNumber. */
static long long property(NSDictionary *properties, NSString *key)
{
    id value = [properties objectForKey:key];
    if (![value isKindOfClass:[NSNumber class]]) {
        return -1;
    }
    return [value longLongValue];
}

void *IOSurfaceCreate(NSDictionary *properties)
{
    if (![properties isKindOfClass:[NSDictionary class]]) {
        complain(@"IOSurfaceCreate was not given a dictionary");
        return NULL;
    }
    long long width = property(properties, kIOSurfaceWidth);
    long long height = property(properties, kIOSurfaceHeight);
    long long element = property(properties, kIOSurfaceBytesPerElement);
    long long row = property(properties, kIOSurfaceBytesPerRow);
    long long alloc = property(properties, kIOSurfaceAllocSize);
    long long format = property(properties, kIOSurfacePixelFormat);
    if ([properties count] != 6 || width <= 0 || height != 1 || element != 1 || row != width
        || alloc != width || format != 0) {
        complain([NSString stringWithFormat:@"IOSurfaceCreate properties are not the seed's: %@",
                                            properties]);
        return NULL;
    }
    return [[FakeIOSurface alloc] initWithSize:(size_t)alloc];
}

int IOSurfaceLock(void *ref, uint32_t options, uint32_t *seed)
{
    FakeIOSurface *s = as_surface(ref, "IOSurfaceLock");
    if (s == nil || (options != 0 && options != 1)) {
        return IO_RETURN_BAD;
    }
    if (s->locks > 0 && s->lockOptions != options) {
        complain(@"IOSurfaceLock with other options than the lock already held");
        return IO_RETURN_ERROR;
    }
    s->locks++;
    s->lockOptions = options;
    if (seed != NULL) {
        *seed = 0;
    }
    return IO_RETURN_SUCCESS;
}

int IOSurfaceUnlock(void *ref, uint32_t options, uint32_t *seed)
{
    FakeIOSurface *s = as_surface(ref, "IOSurfaceUnlock");
    if (s == nil) {
        return IO_RETURN_BAD;
    }
    if (s->locks == 0 || s->lockOptions != options) {
        complain(@"IOSurfaceUnlock does not match a lock");
        return IO_RETURN_ERROR;
    }
    s->locks--;
    if (seed != NULL) {
        *seed = 0;
    }
    return IO_RETURN_SUCCESS;
}

void *IOSurfaceGetBaseAddress(void *ref)
{
    FakeIOSurface *s = as_surface(ref, "IOSurfaceGetBaseAddress");
    if (s == nil) {
        return NULL;
    }
    if (s->locks == 0) {
        complain(@"IOSurfaceGetBaseAddress on an unlocked surface");
    }
    return s->base;
}

size_t IOSurfaceGetAllocSize(void *ref)
{
    FakeIOSurface *s = as_surface(ref, "IOSurfaceGetAllocSize");
    return s == nil ? 0 : s->size;
}

/* Any object here is an NSObject, as CF types are toll-free bridged on Apple's systems. */
void CFRelease(const void *ref)
{
    if (ref == NULL) {
        complain(@"CFRelease(NULL), which crashes on Apple's systems");
        return;
    }
    [(id)ref release];
}

/* ---- AppleNeuralEngine ---- */

static NSString *const model_path_prefix = @"@model_path/";

/* The number of `func` declarations of a MIL program: the valid procedure indices. */
static NSUInteger function_count(NSData *mil)
{
    NSString *text = [[[NSString alloc] initWithData:mil encoding:NSUTF8StringEncoding]
        autorelease];
    NSUInteger functions = 0;
    for (NSString *line in [text componentsSeparatedByString:@"\n"]) {
        NSString *trimmed = [line stringByTrimmingCharactersInSet:
                                      [NSCharacterSet whitespaceCharacterSet]];
        if ([trimmed hasPrefix:@"func "]) {
            functions++;
        }
    }
    return functions;
}

static uint64_t fnv1a(uint64_t hash, const void *bytes, size_t len)
{
    const unsigned char *p = bytes;
    for (size_t i = 0; i < len; i++) {
        hash = (hash ^ p[i]) * 0x100000001b3ULL;
    }
    return hash;
}

@interface _ANEInMemoryModelDescriptor : NSObject
{
@public
    NSData *mil;
    NSDictionary *weights;
    NSString *hex;
}
@end

@implementation _ANEInMemoryModelDescriptor
+ (id)modelWithMILText:(id)text weights:(id)weightsDictionary optionsPlist:(id)options
{
    if (![text isKindOfClass:[NSData class]] || [text length] == 0) {
        complain(@"modelWithMILText: wants the MIL text as non-empty NSData");
        return nil;
    }
    if (![weightsDictionary isKindOfClass:[NSDictionary class]]) {
        complain(@"modelWithMILText:weights: wants a dictionary, empty without weights");
        return nil;
    }
    if (options != nil) {
        complain(@"modelWithMILText:weights:optionsPlist: wants optionsPlist nil");
        return nil;
    }
    uint64_t hash = fnv1a(0xcbf29ce484222325ULL, [text bytes], [text length]);
    NSArray *keys = [[weightsDictionary allKeys] sortedArrayUsingSelector:@selector(compare:)];
    for (id key in keys) {
        id entry = [weightsDictionary objectForKey:key];
        id offset = [entry isKindOfClass:[NSDictionary class]] ? [entry objectForKey:@"offset"]
                                                                 : nil;
        id data = [entry isKindOfClass:[NSDictionary class]] ? [entry objectForKey:@"data"] : nil;
        if (![key isKindOfClass:[NSString class]] || ![key hasPrefix:model_path_prefix]
            || ![offset isKindOfClass:[NSNumber class]] || [offset longLongValue] != 0
            || ![data isKindOfClass:[NSData class]] || [entry count] != 2) {
            complain([NSString stringWithFormat:@"weights entry %@ is not "
                                                @"{@model_path/...: {offset: @0, data: NSData}}",
                                                key]);
            return nil;
        }
        const char *path = [key UTF8String];
        hash = fnv1a(hash, path, strlen(path) + 1);
        hash = fnv1a(hash, [data bytes], [data length]);
    }
    _ANEInMemoryModelDescriptor *d = [[[self alloc] init] autorelease];
    d->mil = [text copy];
    d->weights = [weightsDictionary copy];
    d->hex = [[NSString alloc] initWithFormat:@"%016llX", (unsigned long long)hash];
    return d;
}

- (id)init
{
    self = [super init];
    if (self != nil) {
        count(&live_objects, 1);
    }
    return self;
}

- (void)dealloc
{
    [mil release];
    [weights release];
    [hex release];
    count(&live_objects, -1);
    [super dealloc];
}
@end

@interface _ANEIOSurfaceObject : NSObject
{
@public
    FakeIOSurface *surface;
}
@end

@implementation _ANEIOSurfaceObject
+ (id)objectWithIOSurface:(void *)ref
{
    FakeIOSurface *s = as_surface(ref, "+[_ANEIOSurfaceObject objectWithIOSurface:]");
    if (s == nil) {
        return nil;
    }
    _ANEIOSurfaceObject *o = [[[self alloc] init] autorelease];
    o->surface = [s retain];
    return o;
}

- (void *)ioSurface
{
    return surface;
}

- (id)init
{
    self = [super init];
    if (self != nil) {
        count(&live_objects, 1);
    }
    return self;
}

- (void)dealloc
{
    [surface release];
    count(&live_objects, -1);
    [super dealloc];
}
@end

@interface _ANERequest : NSObject
{
@public
    NSArray *inputs;
    NSArray *inputIndices;
    NSArray *outputs;
    NSArray *outputIndices;
    NSNumber *procedureIndex;
}
@end

/* Whether `objects` is an NSArray of _ANEIOSurfaceObject and `indices` an NSArray of as many
 * NSNumbers forming a permutation of 0..n-1. */
static BOOL valid_side(id objects, id indices, NSString *side)
{
    if (![objects isKindOfClass:[NSArray class]] || ![indices isKindOfClass:[NSArray class]]
        || [objects count] != [indices count] || [objects count] == 0) {
        complain([NSString stringWithFormat:@"request %@: wants two non-empty arrays of one "
                                            @"length",
                                            side]);
        return NO;
    }
    NSUInteger n = [objects count];
    NSMutableIndexSet *seen = [NSMutableIndexSet indexSet];
    for (NSUInteger i = 0; i < n; i++) {
        id object = [objects objectAtIndex:i];
        id index = [indices objectAtIndex:i];
        if (![object isKindOfClass:[_ANEIOSurfaceObject class]]
            || ![index isKindOfClass:[NSNumber class]] || [index longLongValue] < 0
            || [index longLongValue] >= (long long)n
            || [seen containsIndex:[index unsignedIntegerValue]]) {
            complain([NSString stringWithFormat:@"request %@ %lu: not an _ANEIOSurfaceObject with "
                                                @"a fresh index below %lu",
                                                side, (unsigned long)i, (unsigned long)n]);
            return NO;
        }
        [seen addIndex:[index unsignedIntegerValue]];
    }
    return YES;
}

@implementation _ANERequest
+ (id)requestWithInputs:(id)ins
           inputIndices:(id)inIndices
                outputs:(id)outs
          outputIndices:(id)outIndices
          weightsBuffer:(id)weightsBuffer
              perfStats:(id)perfStats
         procedureIndex:(id)procedure
{
    if (!valid_side(ins, inIndices, @"inputs") || !valid_side(outs, outIndices, @"outputs")) {
        return nil;
    }
    if (weightsBuffer != nil || perfStats != nil) {
        complain(@"request: weightsBuffer and perfStats are nil in every working project");
        return nil;
    }
    if (![procedure isKindOfClass:[NSNumber class]]) {
        complain(@"request: procedureIndex must be an NSNumber");
        return nil;
    }
    _ANERequest *r = [[[self alloc] init] autorelease];
    r->inputs = [ins copy];
    r->inputIndices = [inIndices copy];
    r->outputs = [outs copy];
    r->outputIndices = [outIndices copy];
    r->procedureIndex = [procedure retain];
    return r;
}

- (id)init
{
    self = [super init];
    if (self != nil) {
        count(&live_objects, 1);
    }
    return self;
}

- (void)dealloc
{
    [inputs release];
    [inputIndices release];
    [outputs release];
    [outputIndices release];
    [procedureIndex release];
    count(&live_objects, -1);
    [super dealloc];
}

/* The surface bound to program slot `slot` of one side. */
static FakeIOSurface *at_slot(NSArray *objects, NSArray *indices, NSUInteger slot)
{
    for (NSUInteger i = 0; i < [indices count]; i++) {
        if ([[indices objectAtIndex:i] unsignedIntegerValue] == slot) {
            return ((_ANEIOSurfaceObject *)[objects objectAtIndex:i])->surface;
        }
    }
    return nil;
}
@end

@interface _ANEInMemoryModel : NSObject
{
    _ANEInMemoryModelDescriptor *descriptor;
    BOOL loaded;
}
@end

static NSString *const ane_domain = @"com.apple.appleneuralengine";

@implementation _ANEInMemoryModel
+ (id)inMemoryModelWithDescriptor:(id)d
{
    if (![d isKindOfClass:[_ANEInMemoryModelDescriptor class]]) {
        complain(@"inMemoryModelWithDescriptor: was not given a descriptor");
        return nil;
    }
    _ANEInMemoryModel *m = [[[self alloc] init] autorelease];
    m->descriptor = [d retain];
    return m;
}

- (id)init
{
    self = [super init];
    if (self != nil) {
        count(&live_objects, 1);
    }
    return self;
}

- (void)dealloc
{
    if (loaded) {
        complain(@"a model was released while loaded");
        count(&loaded_models, -1);
    }
    [descriptor release];
    count(&live_objects, -1);
    [super dealloc];
}

- (id)hexStringIdentifier
{
    return [[descriptor->hex copy] autorelease];
}

/* The number of functions of this model's compiled program, 0 if not compiled. Nothing is
 * autoreleased: the backend sends compiledModelExists outside any autorelease pool. */
- (NSUInteger)compiledFunctions
{
    pthread_mutex_lock(&state_lock);
    NSUInteger n = [[compiled_programs objectForKey:descriptor->hex] unsignedIntegerValue];
    pthread_mutex_unlock(&state_lock);
    return n;
}

- (BOOL)compiledModelExists
{
    return [self compiledFunctions] > 0;
}

static BOOL check_options(id options, unsigned int qos, NSError **error)
{
    if (![options isKindOfClass:[NSDictionary class]]) {
        return fail(error, ane_domain, 100, @"options must be a dictionary");
    }
    if (qos > 63) {
        return fail(error, ane_domain, 101,
                    [NSString stringWithFormat:@"QoS %u is not in 0..63", qos]);
    }
    return YES;
}

/* Whether `path` holds exactly `expected`. */
static BOOL file_holds(NSString *path, NSData *expected, NSError **error)
{
    NSData *found = [NSData dataWithContentsOfFile:path];
    if (found == nil) {
        return fail(error, @"com.apple.appleneuralengine.compiler", 2,
                    [NSString stringWithFormat:@"%@ does not exist", path]);
    }
    if (![found isEqualToData:expected]) {
        return fail(error, @"com.apple.appleneuralengine.compiler", 3,
                    [NSString stringWithFormat:@"%@ differs from the descriptor", path]);
    }
    return YES;
}

- (BOOL)compileWithQoS:(unsigned int)qos options:(id)options error:(NSError **)error
{
    if (!check_options(options, qos, error) || !fail_armed(FAIL_COMPILE, error)) {
        return NO;
    }
    NSString *dir = [NSTemporaryDirectory() stringByAppendingPathComponent:descriptor->hex];
    if (!file_holds([dir stringByAppendingPathComponent:@"model.mil"], descriptor->mil, error)) {
        return NO;
    }
    for (NSString *key in descriptor->weights) {
        NSString *rel = [key substringFromIndex:[model_path_prefix length]];
        NSData *data = [[descriptor->weights objectForKey:key] objectForKey:@"data"];
        if (!file_holds([dir stringByAppendingPathComponent:rel], data, error)) {
            return NO;
        }
    }
    NSUInteger functions = function_count(descriptor->mil);
    if (functions == 0) {
        return fail(error, @"com.apple.appleneuralengine.compiler", 4,
                    @"the MIL text declares no function");
    }
    pthread_mutex_lock(&state_lock);
    if (compiled_programs == nil) {
        compiled_programs = [NSMutableDictionary new];
    }
    [compiled_programs setObject:[NSNumber numberWithUnsignedInteger:functions]
                          forKey:descriptor->hex];
    pthread_mutex_unlock(&state_lock);
    count(&compiles, 1);
    return YES;
}

- (BOOL)loadWithQoS:(unsigned int)qos options:(id)options error:(NSError **)error
{
    if (!check_options(options, qos, error) || !fail_armed(FAIL_LOAD, error)) {
        return NO;
    }
    if (![self compiledModelExists]) {
        return fail(error, ane_domain, 10, @"load: the program was never compiled");
    }
    if (loaded) {
        return fail(error, ane_domain, 11, @"load: the model is loaded already");
    }
    loaded = YES;
    count(&loaded_models, 1);
    return YES;
}

- (BOOL)unloadWithQoS:(unsigned int)qos error:(NSError **)error
{
    if (!check_options([NSDictionary dictionary], qos, error)) {
        return NO;
    }
    if (!loaded) {
        return fail(error, ane_domain, 12, @"unload: the model is not loaded");
    }
    loaded = NO;
    count(&loaded_models, -1);
    return YES;
}

- (BOOL)evaluateWithQoS:(unsigned int)qos
                options:(id)options
                request:(id)request
                  error:(NSError **)error
{
    if (!check_options(options, qos, error) || !fail_armed(FAIL_EVALUATE, error)) {
        return NO;
    }
    if (!loaded) {
        return fail(error, ane_domain, 20, @"evaluate: the model is not loaded");
    }
    if (![request isKindOfClass:[_ANERequest class]]) {
        return fail(error, ane_domain, 21, @"evaluate: not an _ANERequest");
    }
    _ANERequest *r = request;
    NSUInteger functions = [self compiledFunctions];
    if ([r->procedureIndex unsignedIntegerValue] >= functions) {
        return fail(error, ane_domain, 22,
                    [NSString stringWithFormat:@"evaluate: procedureIndex %@ but %lu functions",
                                               r->procedureIndex, (unsigned long)functions]);
    }
    NSArray *all = [r->inputs arrayByAddingObjectsFromArray:r->outputs];
    for (_ANEIOSurfaceObject *o in all) {
        if (o->surface->locks != 0) {
            return fail(error, ane_domain, 23, @"evaluate: a surface is locked by the CPU");
        }
    }
    NSUInteger ins = [r->inputs count];
    for (NSUInteger slot = 0; slot < [r->outputs count]; slot++) {
        FakeIOSurface *out = at_slot(r->outputs, r->outputIndices, slot);
        FakeIOSurface *in = at_slot(r->inputs, r->inputIndices, slot % ins);
        size_t n = in->size < out->size ? in->size : out->size;
        memcpy(out->base, in->base, n);
        memset(out->base + n, 0, out->size - n);
    }
    count(&evaluates, 1);
    return YES;
}
@end
