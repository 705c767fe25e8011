#if SANITIZE_THREAD
import SanitizerSupport

/// In thread-sanitizer builds, the lock ThreadSanitizer can see (see SanitizerMutex).
typealias Mutex<Value: ~Copyable> = SanitizerMutex<Value>
#endif
