#if SANITIZE_THREAD
import Glibc

/// What `Mutex` is in a thread-sanitizer build (`scripts/test --sanitize thread`, which
/// defines SANITIZE_THREAD): the same interface as Synchronization's `Mutex`, over a
/// pthread mutex. The standard library's `Mutex` waits on a futex directly, which
/// ThreadSanitizer cannot see, so every value it guards would be reported as a race;
/// pthread_mutex_lock is intercepted and understood. Each module that uses `Mutex`
/// shadows the standard one with this in such builds (its `Mutex.swift`); ordinary
/// builds compile none of it.
public final class SanitizerMutex<Value: ~Copyable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    public init(_ initialValue: consuming sending Value) {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        value = initialValue
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<Result: ~Copyable, E: Error>(_ body: (inout sending Value) throws(E) -> sending Result) throws(E) -> sending Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }

    public func withLockIfAvailable<Result: ~Copyable, E: Error>(_ body: (inout sending Value) throws(E) -> sending Result) throws(E) -> sending Result? {
        guard pthread_mutex_trylock(mutex) == 0 else { return nil }
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
#endif
