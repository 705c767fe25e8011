import CLinux
import Glibc

/// A plain pthread, for work that blocks: a vCPU in `KVM_RUN` for as long as the guest
/// runs, a disk's I/O worker in `preadv`. Such work needs threads of its own, outside
/// any cooperative task pool. (In `Devices`, the lowest module that starts threads.)
public enum HostThread {
    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// Starts `body` on a new thread; with `kind`, the thread first installs that kind's
    /// seccomp filter (when the process runs with one).
    public static func spawn(kind: ThreadKind? = nil, _ body: @escaping @Sendable () -> Void) -> pthread_t? {
        let run: @Sendable () -> Void
        if let kind {
            run = {
                // Named for ps, top and the kernel's seccomp log lines (comm=...).
                clinux_set_thread_name("sv-\(kind.shortName)")
                Seccomp.enter(kind)
                body()
            }
        } else {
            run = body
        }
        // The box is retained for the thread, which releases it when it starts.
        let box = Unmanaged.passRetained(Body(run)).toOpaque()
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

    /// A thread nobody will join (it ends on its own, or with the process): its
    /// resources go back when it ends.
    @discardableResult
    public static func detached(kind: ThreadKind? = nil, _ body: @escaping @Sendable () -> Void) -> Bool {
        guard let thread = spawn(kind: kind, body) else { return false }
        pthread_detach(thread)
        return true
    }
}
