//! Union-find over global document indices (4 + 4 bytes per document: parent and size).

/// Disjoint sets with path halving and union by size.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    /// `n` singletons.
    pub fn new(n: usize) -> Self {
        Self { parent: (0..n as u32).collect(), size: vec![1; n] }
    }

    /// The representative of `x`'s set.
    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = self.parent[x as usize];
        }
        x
    }

    /// Joins the sets of `a` and `b`; returns whether they were separate.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        let (big, small) =
            if self.size[ra as usize] > self.size[rb as usize] || (self.size[ra as usize] == self.size[rb as usize] && ra < rb) {
                (ra, rb)
            } else {
                (rb, ra)
            };
        self.parent[small as usize] = big;
        self.size[big as usize] += self.size[small as usize];
        true
    }

    /// Size of `x`'s set.
    pub fn set_size(&mut self, x: u32) -> u32 {
        let r = self.find(x);
        self.size[r as usize]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn joins_transitively() {
        let mut u = super::UnionFind::new(6);
        assert!(u.union(0, 1));
        assert!(u.union(2, 1));
        assert!(!u.union(0, 2));
        assert_eq!(u.find(0), u.find(2));
        assert_eq!(u.set_size(2), 3);
        assert_ne!(u.find(3), u.find(0));
        assert_eq!(u.set_size(5), 1);
    }
}
