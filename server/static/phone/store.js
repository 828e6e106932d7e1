/* A small key-value store in IndexedDB, shared by the phone app and its service worker:
 *   PhoneStore.get(key) -> value or undefined;  PhoneStore.set(key, value);  PhoneStore.del(key)
 *   PhoneStore.clear()
 * The squad's credentials, its last seq, the steps waiting to be sent and its work live here,
 * on the phone only (never in a URL), and survive the app being closed. */
(function (scope) {
  "use strict";

  const NAME = "dispatch-phone";
  const STORE = "kv";
  let opening = null;

  function open() {
    if (!opening) {
      opening = new Promise((resolve, reject) => {
        const request = indexedDB.open(NAME, 1);
        request.onupgradeneeded = () => request.result.createObjectStore(STORE);
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
    }
    return opening;
  }

  async function run(mode, operation) {
    const db = await open();
    return new Promise((resolve, reject) => {
      const transaction = db.transaction(STORE, mode);
      const request = operation(transaction.objectStore(STORE));
      // Resolved once the transaction is committed: a caller that awaits a write may rely
      // on it (the app acknowledges a frame only after its work is saved).
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
    });
  }

  scope.PhoneStore = {
    get: (key) => run("readonly", (store) => store.get(key)),
    set: (key, value) => run("readwrite", (store) => store.put(value, key)),
    del: (key) => run("readwrite", (store) => store.delete(key)),
    clear: () => run("readwrite", (store) => store.clear()),
  };
})(self);
