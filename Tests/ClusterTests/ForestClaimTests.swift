import Testing

@testable import Cluster

struct ForestClaimTests {
    typealias O = ForestClaim.Other

    @Test(arguments: [
        // limit, mine, others, claim
        (10, 0, [O](), 10),  // alone: the whole forest
        // the first of three idle nodes: a third, rounded up
        (10, 0, [O(sessions: 0, claim: 0), O(sessions: 0, claim: 0)], 4),
        (10, 0, [O(sessions: 0, claim: 4), O(sessions: 0, claim: 4)], 2),  // the last: what the others left
        (10, 8, [O(sessions: 0, claim: 1)], 9),  // busy: what it holds and the free the other has not claimed
        (10, 9, [O(sessions: 0, claim: 1)], 9),  // full but for the other's claim: keeps what it holds
        (10, 0, [O(sessions: 9, claim: 9)], 1),  // idle beside a busy node: the one left
        (10, 3, [O(sessions: 7, claim: 7)], 3),  // the forest is full: nothing to grow into
        (10, 5, [O(sessions: 2, claim: 8)], 2),  // another claimed more than it uses: wait for it to give back
        (10, 0, [O(sessions: 0, claim: 10)], 0),  // nothing left at all
        (0, 0, [O(sessions: 0, claim: 0)], 0),
    ])
    func claims(limit: Int, mine: Int, others: [O], expected: Int) {
        #expect(ForestClaim.claim(limit: limit, mine: mine, others: others) == expected)
    }

    /// Nodes claiming one after another against each other's claims never exceed the limit, whatever
    /// their sessions, over many rounds; and a node whose load stays gets all the capacity others
    /// give back.
    @Test func claimsInTurnNeverAddUpToMoreThanTheLimit() {
        var rng = SystemRandomNumberGenerator()
        for limit in [1, 2, 10, 37] {
            var claims = [0, 0, 0]
            var sessions = [0, 0, 0]
            for _ in 0..<300 {
                let i = Int.random(in: 0..<3, using: &rng)
                // Sessions move within the node's own claim (admission's rule).
                sessions[i] = Int.random(in: 0...max(0, claims[i]), using: &rng)
                let others = (0..<3).filter { $0 != i }.map { O(sessions: sessions[$0], claim: claims[$0]) }
                claims[i] = ForestClaim.claim(limit: limit, mine: sessions[i], others: others)
                #expect(claims.reduce(0, +) <= limit, "\(claims) over \(limit)")
                #expect(claims[i] >= min(sessions[i], limit - others.reduce(0) { $0 + $1.claim }))
            }
        }
        // One node busy, the others idle: within a few rounds it holds all but the idle nodes' one each.
        var claims = [4, 3, 3]
        var sessions = [4, 0, 0]
        for round in 0..<10 {
            let i = round % 3
            let others = (0..<3).filter { $0 != i }.map { O(sessions: sessions[$0], claim: claims[$0]) }
            claims[i] = ForestClaim.claim(limit: 10, mine: sessions[i], others: others)
            if i == 0 { sessions[0] = claims[0] }  // it fills whatever it gets
        }
        #expect(sessions[0] >= 8, "\(claims) \(sessions)")
    }
}
