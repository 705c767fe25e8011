import Glibc

/// A plain pthread for a vCPU: a vCPU blocks in `KVM_RUN` for as long as the guest
/// runs, so it needs a thread of its own, outside any cooperative task pool.
public enum HostThread {
    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    public static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
        // The box is retained for the thread, which releases it when it starts.
        let box = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let r = pthread_create(&thread, nil, { arg in
            Unmanaged<Body>.fromOpaque(arg!).takeRetainedValue().run()
            return nil
        }, box)
        if r != 0 {
            Unmanaged<Body>.fromOpaque(box).release()
            return nil
        }
        return thread
    }

    public static func join(_ thread: pthread_t) { pthread_join(thread, nil) }
}
